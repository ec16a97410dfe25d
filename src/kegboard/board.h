/* One Kegboard on a serial port, as kegboard_daemon drives it: opening, the probe for KBSP frames, the
 * hello handshake and the heartbeat watchdog, parser error accounting, and the paced command queue
 * (pings and relays, one frame per 100 ms). What the frames mean is the owner's business (callbacks). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "kbsp.h"
#include "macro.h"

typedef struct Board Board;

typedef struct BoardConfig {
        const char *device;             /* path; a regular file is replayed */
        int speed;
        const char *name;               /* --kegboard_name; NULL/"" = derived from the serial */
        uint64_t probe_usec;            /* --probe_seconds */
        uint64_t hello_timeout_usec;    /* --hello_timeout; 0 = never */
        unsigned required_firmware_version;
        bool show_messages;             /* frames at INFO instead of DEBUG */
} BoardConfig;

typedef struct BoardCallbacks {
        /* The probe saw a valid frame (for a replay file: right after opening). */
        void (*ready)(Board *b, void *userdata);
        /* The first hello, with an acceptable firmware version; the name is known from now on. */
        void (*identified)(Board *b, const KbspHello *hello, void *userdata);
        /* Every complete message after identification (the first hello excluded). */
        void (*message)(Board *b, const KbspMessage *m, void *userdata);
        /* The board side is over: not a kegboard, device gone, end of the replay file (0), or
         * firmware too old, heartbeat lost, I/O error (1). The port is closed already. */
        void (*finished)(Board *b, int exit_status, void *userdata);
} BoardCallbacks;

int board_new(Board **ret, sd_event *event, const BoardConfig *config, const BoardCallbacks *callbacks,
              void *userdata);
Board *board_free(Board *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(Board *, board_free);

/* Opens the device and starts the probe (or the replay). Failures are logged; negative errno. */
int board_start(Board *b);

const char *board_device(const Board *b);
const char *board_name(const Board *b);         /* NULL until identified */

/* Queues set_output(id, on) (id < KBSP_MAX_OUTPUTS); only the newest state per output waits.
 * -ENOTCONN when the port is closed or a replay. */
int board_set_relay(Board *b, unsigned id, bool on);
/* The last state asked for through board_set_relay(). */
bool board_relay_wanted_on(const Board *b, unsigned id);
/* Queues set_output(id, 0) for every relay this process ever switched on (stopping). */
void board_relays_off(Board *b);
/* Nothing queued and nothing half-written (or the port is closed). */
bool board_commands_drained(const Board *b);
/* Called whenever board_commands_drained() becomes true. */
void board_set_drained_callback(Board *b, void (*drained)(Board *b, void *userdata));
