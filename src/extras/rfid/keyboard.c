/* Keyboard-wedge decoder: see keyboard.h. */
#include <linux/input-event-codes.h>

#include "keyboard.h"

static const char *const result_names[_KEYBOARD_RESULT_MAX] = {
        [KEYBOARD_READ] = "read",
        [KEYBOARD_SHIFTED_DIGIT] = "shifted_digit",
        [KEYBOARD_BAD_KEY] = "bad_key",
        [KEYBOARD_TOO_LONG] = "too_long",
        [KEYBOARD_DROPPED] = "dropped",
        [KEYBOARD_STALE] = "stale",
        [KEYBOARD_EMPTY_LINE] = "empty_line",
};

const char *keyboard_result_to_string(KeyboardResult r) {
        return (unsigned) r < _KEYBOARD_RESULT_MAX ? result_names[r] : NULL;
}

/* Key code -> character, for the keys a reader types: the top-row digits (no Shift allowed), the
 * keypad digits, the letters (lower case; upper-case hex comes as Shift + letter). */
static const struct { uint16_t code; char c; bool keypad; } keymap[] = {
        { KEY_1, '1', false }, { KEY_2, '2', false }, { KEY_3, '3', false }, { KEY_4, '4', false },
        { KEY_5, '5', false }, { KEY_6, '6', false }, { KEY_7, '7', false }, { KEY_8, '8', false },
        { KEY_9, '9', false }, { KEY_0, '0', false },
        { KEY_KP0, '0', true }, { KEY_KP1, '1', true }, { KEY_KP2, '2', true }, { KEY_KP3, '3', true },
        { KEY_KP4, '4', true }, { KEY_KP5, '5', true }, { KEY_KP6, '6', true }, { KEY_KP7, '7', true },
        { KEY_KP8, '8', true }, { KEY_KP9, '9', true },
        { KEY_A, 'a', false }, { KEY_B, 'b', false }, { KEY_C, 'c', false }, { KEY_D, 'd', false },
        { KEY_E, 'e', false }, { KEY_F, 'f', false }, { KEY_G, 'g', false }, { KEY_H, 'h', false },
        { KEY_I, 'i', false }, { KEY_J, 'j', false }, { KEY_K, 'k', false }, { KEY_L, 'l', false },
        { KEY_M, 'm', false }, { KEY_N, 'n', false }, { KEY_O, 'o', false }, { KEY_P, 'p', false },
        { KEY_Q, 'q', false }, { KEY_R, 'r', false }, { KEY_S, 's', false }, { KEY_T, 't', false },
        { KEY_U, 'u', false }, { KEY_V, 'v', false }, { KEY_W, 'w', false }, { KEY_X, 'x', false },
        { KEY_Y, 'y', false }, { KEY_Z, 'z', false },
};

static int key_char(unsigned code, bool *ret_keypad) {
        for (size_t i = 0; i < ELEMENTSOF(keymap); i++)
                if (keymap[i].code == code) {
                        *ret_keypad = keymap[i].keypad;
                        return keymap[i].c;
                }
        return -1;
}

static bool key_ignored(unsigned code) {
        switch (code) {
        case KEY_LEFTCTRL: case KEY_RIGHTCTRL:
        case KEY_LEFTALT: case KEY_RIGHTALT:
        case KEY_LEFTMETA: case KEY_RIGHTMETA:
        case KEY_CAPSLOCK: case KEY_NUMLOCK:
                return true;
        default:
                return false;
        }
}

static bool key_is_digit(unsigned code) {
        bool keypad;
        int c = key_char(code, &keypad);
        return c >= '0' && c <= '9';
}

bool keyboard_capable(bool (*has_key)(unsigned code, void *userdata), void *userdata) {
        bool digit = false;

        assert_return(has_key, false);

        for (size_t i = 0; i < ELEMENTSOF(keymap) && !digit; i++)
                if (key_is_digit(keymap[i].code) && has_key(keymap[i].code, userdata))
                        digit = true;
        return digit && (has_key(KEY_ENTER, userdata) || has_key(KEY_KPENTER, userdata));
}

void keyboard_decoder_init(KeyboardDecoder *k) {
        assert_return(k, );

        *k = (KeyboardDecoder) {};
}

static void line_clear(KeyboardDecoder *k) {
        k->len = 0;
        k->line[0] = '\0';
        k->bad = false;
        k->bad_code = 0;
}

static void line_mark_bad(KeyboardDecoder *k, KeyboardResult why, unsigned code) {
        /* The first reason is the one reported. */
        if (k->bad)
                return;
        k->bad = true;
        k->bad_result = why;
        k->bad_code = code;
}

static void line_append(KeyboardDecoder *k, char c) {
        if (k->bad)
                return;
        if (k->len >= KEYBOARD_LINE_MAX) {
                line_mark_bad(k, KEYBOARD_TOO_LONG, 0);
                return;
        }
        k->line[k->len++] = c;
        k->line[k->len] = '\0';
}

size_t keyboard_decoder_feed(KeyboardDecoder *k, uint16_t type, uint16_t code, int32_t value, uint64_t now,
                             KeyboardEvent out[static 2]) {
        size_t n = 0;
        bool keypad = false;
        int c;

        assert_return(k && out, 0);

        if (k->dropping) {
                /* Everything up to and including the next SYN_REPORT belongs to the lost packet. */
                if (type == EV_SYN && code == SYN_REPORT)
                        k->dropping = false;
                return 0;
        }
        if (type == EV_SYN && code == SYN_DROPPED) {
                line_clear(k);
                k->shift_left = k->shift_right = false;
                k->dropping = true;
                out[n++] = (KeyboardEvent) { .result = KEYBOARD_DROPPED };
                return n;
        }
        if (type != EV_KEY)
                return 0;

        if (code == KEY_LEFTSHIFT || code == KEY_RIGHTSHIFT) {
                bool *shift = code == KEY_LEFTSHIFT ? &k->shift_left : &k->shift_right;
                if (value == 1)
                        *shift = true;
                else if (value == 0)
                        *shift = false;
                return 0;
        }
        /* Releases and autorepeat add nothing. */
        if (value != 1 || key_ignored(code))
                return 0;

        if ((k->len > 0 || k->bad) && now > k->last_press + KEYBOARD_STALE_USEC) {
                line_clear(k);
                out[n++] = (KeyboardEvent) { .result = KEYBOARD_STALE };
        }
        k->last_press = now;

        if (code == KEY_ENTER || code == KEY_KPENTER) {
                if (k->bad)
                        out[n++] = (KeyboardEvent) { .result = k->bad_result, .code = k->bad_code };
                else if (k->len == 0)
                        out[n++] = (KeyboardEvent) { .result = KEYBOARD_EMPTY_LINE };
                else {
                        out[n] = (KeyboardEvent) { .result = KEYBOARD_READ };
                        memcpy(out[n].token, k->line, k->len + 1);
                        n++;
                }
                line_clear(k);
                return n;
        }

        c = key_char(code, &keypad);
        if (c < 0)
                line_mark_bad(k, KEYBOARD_BAD_KEY, code);
        else if (c >= '0' && c <= '9' && !keypad && (k->shift_left || k->shift_right))
                line_mark_bad(k, KEYBOARD_SHIFTED_DIGIT, code);
        else
                line_append(k, (char) c);
        return n;
}
