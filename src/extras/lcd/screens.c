/* Screen layouts of the lcd_daemon (programs-and-flags.md section 8.1). */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "screens.h"

void lcd_screen_set_row(LcdScreen *s, unsigned row, const char *text) {
        size_t i = 0;

        if (row >= LCD_ROWS)
                return;
        for (; text && text[i] && i < LCD_COLS; i++) {
                unsigned char ch = (unsigned char) text[i];
                /* Control bytes would move the cursor or start a command on some displays. */
                s->rows[row][i] = ch < 0x20 || ch == 0x7f ? ' ' : (char) ch;
        }
        for (; i < LCD_COLS; i++)
                s->rows[row][i] = ' ';
        s->rows[row][LCD_COLS] = 0;
}

static void set_rowf(LcdScreen *s, unsigned row, const char *format, ...) _printf_(3, 4);
static void set_rowf(LcdScreen *s, unsigned row, const char *format, ...) {
        char buf[256];
        va_list ap;

        va_start(ap, format);
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        lcd_screen_set_row(s, row, buf);
}

void lcd_screen_splash(LcdScreen *s) {
        lcd_screen_set_row(s, 0, " ================== ");
        lcd_screen_set_row(s, 1, "       kegbot!      ");
        lcd_screen_set_row(s, 2, "      beer you.     ");
        lcd_screen_set_row(s, 3, " ================== ");
}

void lcd_format_time(time_t t, char *buf, size_t size) {
        struct tm tm;

        if (size == 0)
                return;
        buf[0] = 0;
        if (!localtime_r(&t, &tm))
                return;
        if (strftime(buf, size, "%b %d %I:%M%p", &tm) == 0) {
                buf[0] = 0;
                return;
        }
        for (char *p = buf; *p; p++)
                *p = (char) tolower((unsigned char) *p);
}

void lcd_screen_last_pour(LcdScreen *s, const LastPour *p) {
        lcd_screen_set_row(s, 0, "_last pour__________");
        if (!p || !p->known) {
                lcd_screen_set_row(s, 1, "user: ");
                lcd_screen_set_row(s, 2, "when: ");
                lcd_screen_set_row(s, 3, "size: ");
                return;
        }

        char when[64] = "";
        if (p->has_time)
                lcd_format_time(p->time, when, sizeof(when));
        set_rowf(s, 1, "user: %s", p->user);
        set_rowf(s, 2, "when: %s", when);
        set_rowf(s, 3, "size: %.2f ounces", p->volume_ml / ML_PER_OUNCE);
}

void lcd_screen_pour(LcdScreen *s, const char *username, bool has_volume, double volume_ml) {
        lcd_screen_set_row(s, 0, "_now pouring________");
        set_rowf(s, 1, "|user: %s", isempty(username) ? "guest" : username);
        if (has_volume)
                set_rowf(s, 2, "|oz: %.2f", volume_ml / ML_PER_OUNCE);
        else
                lcd_screen_set_row(s, 2, "|oz: ");
        lcd_screen_set_row(s, 3, "|");
}

/* "_" + the name, padded with "_" to 19 characters, then a space; cut at 20. */
static void set_title(LcdScreen *s, const char *name) {
        char title[LCD_COLS + 64];
        size_t n;

        n = (size_t) snprintf(title, sizeof(title), "_%s", name);
        if (n >= sizeof(title))
                n = sizeof(title) - 1;
        while (n < LCD_COLS - 1)
                title[n++] = '_';
        if (n == LCD_COLS - 1)
                title[n++] = ' ';
        title[MIN(n, (size_t) LCD_COLS)] = 0;
        lcd_screen_set_row(s, 0, title);
}

void lcd_screen_tap(LcdScreen *s, const TapInfo *t) {
        set_title(s, t->name);
        lcd_screen_set_row(s, 1, t->beverage);
        lcd_screen_set_row(s, 2, t->producer);
        if (t->has_temperature)
                set_rowf(s, 3, "%.1f%% full  %.1fc", t->percent_full, t->temperature_c);
        else
                set_rowf(s, 3, "%.1f%% full", t->percent_full);
}

void lcd_screen_core_tap(LcdScreen *s, const CoreTapInfo *t) {
        bool pouring = streq_ptr(t->flow_state, "active") || streq_ptr(t->flow_state, "idle");

        set_title(s, !isempty(t->name) ? t->name : !isempty(t->meter_name) ? t->meter_name : "");
        lcd_screen_set_row(s, 1, t->meter_name);
        if (t->ml_per_tick > 0)
                set_rowf(s, 2, "%.4g ticks/ml", 1.0 / t->ml_per_tick);
        else
                lcd_screen_set_row(s, 2, "not calibrated");
        if (pouring && t->flow_volume_ml >= 0)
                set_rowf(s, 3, "pouring %.2f oz", t->flow_volume_ml / ML_PER_OUNCE);
        else if (pouring)
                lcd_screen_set_row(s, 3, "pouring");
        else if (streq_ptr(t->flow_state, "completed") && t->flow_volume_ml >= 0)
                set_rowf(s, 3, "last pour %.2f oz", t->flow_volume_ml / ML_PER_OUNCE);
        else if (streq_ptr(t->flow_state, "completed"))
                lcd_screen_set_row(s, 3, "last pour");
        else
                lcd_screen_set_row(s, 3, "no pours yet");
}

static const char *json_string_at(json_t *o, const char *a, const char *b) {
        json_t *v = json_object_get(o, a);
        if (b)
                v = json_object_get(v, b);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

void tap_info_done(TapInfo *t) {
        free(t->name);
        free(t->beverage);
        free(t->producer);
        *t = (TapInfo) {};
}

int tap_info_from_json(json_t *tap, TapInfo *ret) {
        TapInfo t = {};
        const char *name, *bev, *producer = NULL;
        json_t *keg, *v;

        name = json_string_at(tap, "name", NULL);
        if (!name)
                return -EINVAL;

        keg = json_object_get(tap, "current_keg");
        if (!json_is_object(keg))
                keg = NULL;

        bev = keg ? json_string_at(keg, "beverage", "name") : NULL;
        if (!bev && keg)
                bev = json_string_at(keg, "type", "name");
        if (keg) {
                json_t *prod = json_object_get(json_object_get(keg, "beverage"), "producer");
                producer = json_string_at(prod, "name", NULL);
                v = json_object_get(keg, "percent_full");
                if (json_is_number(v))
                        t.percent_full = json_number_value(v);
        }
        v = json_object_get(json_object_get(tap, "last_temperature"), "temperature_c");
        if (json_is_number(v)) {
                t.has_temperature = true;
                t.temperature_c = json_number_value(v);
        }

        t.name = strdup(name);
        t.beverage = strdup(bev ? bev : "Unknown Beer");
        t.producer = strdup(producer ? producer : "");
        if (!t.name || !t.beverage || !t.producer) {
                tap_info_done(&t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}
