/* The lcd_daemon's screens as pure functions (programs-and-flags.md section 8.1): each renders four
 * rows of exactly LCD_COLS bytes (padded with spaces or cut), no device and no clock involved. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define LCD_COLS 20
#define LCD_ROWS 4
#define ML_PER_OUNCE 29.57353

typedef struct LcdScreen {
        char rows[LCD_ROWS][LCD_COLS + 1];      /* each exactly LCD_COLS bytes, NUL-terminated */
} LcdScreen;

/* A pour already known to the last-pour screen. */
typedef struct LastPour {
        bool known;
        char user[64];
        double volume_ml;
        bool has_time;
        time_t time;            /* wall clock, rendered in local time */
} LastPour;

/* What a tap screen shows, taken from one object of GET taps. */
typedef struct TapInfo {
        char *name;
        char *beverage;         /* never NULL: "Unknown Beer" without one */
        char *producer;         /* never NULL, may be empty */
        double percent_full;
        bool has_temperature;
        double temperature_c;
} TapInfo;

/* What a tap screen shows without a server: the core's org.kegbot.Core1.Tap object, as the core
 * client's model holds it (the strings are borrowed from there). */
typedef struct CoreTapInfo {
        const char *meter_name;
        const char *name;
        double ml_per_tick;     /* 0 = not calibrated */
        const char *flow_state; /* "" or NULL (no flow yet), "active", "idle" or "completed" */
        double flow_volume_ml;  /* -1 = not known */
        const char *flow_username; /* "" or NULL = anonymous */
} CoreTapInfo;

void lcd_screen_splash(LcdScreen *s);
void lcd_screen_last_pour(LcdScreen *s, const LastPour *p);
void lcd_screen_pour(LcdScreen *s, const char *username, bool has_volume, double volume_ml);
void lcd_screen_tap(LcdScreen *s, const TapInfo *t);
/* Standalone tap screen: title as lcd_screen_tap(), the meter, the calibration in ticks per mL,
 * then the pour state ("no pours yet", "pouring <x.xx> oz", "last pour <x.xx> oz"). */
void lcd_screen_core_tap(LcdScreen *s, const CoreTapInfo *t);

/* Reads one tap object (full form, kegbot-server-api.md section 5.8). -EINVAL if it has no
 * string name; everything else falls back to the defaults of section 8.1. */
int tap_info_from_json(json_t *tap, TapInfo *ret);
void tap_info_done(TapInfo *t);

/* "nov 26 12:00pm": strftime("%b %d %I:%M%p") in local time, lower-cased. */
void lcd_format_time(time_t t, char *buf, size_t size);

/* Bytes that would upset a display (controls) become spaces; rows are cut or padded to LCD_COLS. */
void lcd_screen_set_row(LcdScreen *s, unsigned row, const char *text);
