/* rfid_daemon: RFID readers as a source of auth tokens (rfid-readers.md, programs-and-flags.md
 * section 9). PhidgetRFID 1023 over hidraw, ID-12/ID-20 on a tty and keyboard-wedge readers over
 * evdev, spoken to directly; readers found through udev. Tags become TokenAuthEvents (device
 * core.rfid) sent to the core as a kegnet producer. */
#define LOG_COMPONENT "rfid"

#include <limits.h>

#include "app.h"
#include "kegnet.h"
#include "log.h"
#include "manager.h"

static const char *arg_rfid_device = "";
static const char *arg_rfid_backend = "auto";
static bool arg_toggle_output = false;
static const char *arg_tap_name = KEGNET_ALL_TAPS;
static int arg_tag_lost_ms = 200;
static int arg_token_hold_ms = 2000;
static int arg_id12_speed = 9600;
static int arg_phidget_wait_seconds = 0;

static const int id12_speeds[] = { 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 };

static const FlagDef rfid_flags[] = {
        FLAG_STRING("rfid_device", &arg_rfid_device,
                    "Reader node (hidraw, tty or evdev node): serve exactly this reader. Empty: every reader "
                    "udev shows, followed through hotplug."),
        FLAG_ENUM("rfid_backend", &arg_rfid_backend,
                  ((const char *const[]) { "auto", "phidget", "id12", "keyboard", "phidget22", NULL }),
                  "Kind of reader: phidget (PhidgetRFID 1023 over hidraw), id12 (ID-12/ID-20 on a tty), keyboard "
                  "(keyboard-wedge reader over evdev), phidget22 (the vendor library, if built in); auto = from "
                  "the node's udev subsystem, or every kind in discovery mode."),
        FLAG_BOOL("toggle_output", &arg_toggle_output,
                  "PhidgetRFID v2: also switch digital output 1 on while a card is present."),
        FLAG_STRING("tap_name", &arg_tap_name, "meter_name of the TokenAuthEvents."),
        FLAG_INT_RANGE("tag_lost_ms", &arg_tag_lost_ms, 50, 5000,
                       "Phidget: a card is gone after this long without a tag report (ms)."),
        FLAG_INT_RANGE("token_hold_ms", &arg_token_hold_ms, 100, 60000,
                       "Serial and keyboard readers: a token stays present this long after its last read (ms)."),
        FLAG_INT("id12_speed", &arg_id12_speed,
                 "Serial readers' baud rate: 1200, 2400, 4800, 9600, 19200, 38400, 57600 or 115200."),
        FLAG_INT_MIN("phidget_wait_seconds", &arg_phidget_wait_seconds, 0,
                     "Obsolete and ignored (pycore flag files): readers are found through udev."),
        FLAG_END,
};

static const AppInfo app_info = {
        .name = "rfid_daemon",
        .description = "Reads RFID readers (PhidgetRFID 1023, ID-12/ID-20 serial readers, USB keyboard-wedge "
                       "readers) and sends the cards they see to the Kegbot Core as auth tokens (device core.rfid).",
        .flags = rfid_flags,
        .groups = APP_GROUP_KEGNET,
};

static void check_flags(RfidBackend backend) {
        bool speed_ok = false;

        for (size_t i = 0; i < ELEMENTSOF(id12_speeds); i++)
                speed_ok = speed_ok || id12_speeds[i] == arg_id12_speed;
        if (!speed_ok)
                app_flag_error("flag --id12_speed=%d: must be one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, "
                               "115200", arg_id12_speed);
        if (backend == RFID_BACKEND_PHIDGET22) {
                if (!HAVE_PHIDGET22)
                        app_flag_error("--rfid_backend=phidget22: this build has no libphidget22 support");
                if (!isempty(arg_rfid_device))
                        app_flag_error("--rfid_backend=phidget22 finds the reader itself: --rfid_device must be empty");
        }
}

int main(int argc, char **argv) {
        _cleanup_(manager_freep) Manager *m = NULL;
        RfidBackend backend;
        int status;

        app_init(argc, argv, &app_info, NULL);
        backend = rfid_backend_from_string(arg_rfid_backend);
        check_flags(backend);
        if (flags_given("phidget_wait_seconds"))
                log_warning("--phidget_wait_seconds is obsolete and ignored: readers are found through udev");

        const ManagerConfig config = {
                .device = arg_rfid_device,
                .backend = backend,
                .settings = {
                        .toggle_output = arg_toggle_output,
                        .tag_lost_usec = (uint64_t) arg_tag_lost_ms * USEC_PER_MSEC,
                        .token_hold_usec = (uint64_t) arg_token_hold_ms * USEC_PER_MSEC,
                        .id12_speed = arg_id12_speed,
                },
                .tap_name = arg_tap_name,
                .kb_core_addr = app_kb_core_addr(),
        };

        status = 1;
        if (manager_new(&m, &config) >= 0)
                status = manager_run(m);
        m = manager_free(m);
        app_finish();
        return status;
}
