/* kegboard_daemon --start_boards: what kegbot-boards.service runs when kegbot.target starts. udev
 * starts a kegboard-daemon@<tty> when a board is plugged in (70-kegboard.rules) and an
 * rfid-reader@<node> when an RFID reader is (70-kegbot-rfid.rules), both through SYSTEMD_WANTS, but
 * only then: after `systemctl stop kegbot.target` (which stops them, PartOf=) nothing would start
 * them again for devices that stay plugged in. The boards present are the targets of the links
 * 70-kegboard.rules makes in /dev/kegboard/; the readers present are the devices udev nominated
 * (KEGBOT_RFID=1), and their units are the ones the rule put into their SYSTEMD_WANTS. */
#pragma once

#include <libudev.h>

#include "macro.h"

#define BOARDS_DIR "/dev/kegboard"
#define BOARDS_READER_TEMPLATE "rfid-reader@"

/* The tty names ("ttyUSB0") the links in 'dir' point to, sorted, each once; a missing directory is
 * an empty list. Links to something that is no plain device name are skipped (DEBUG). */
int boards_list(const char *dir, char ***ret);

/* "kegboard-daemon@<tty>.service" for a tty name from boards_list(). */
int boards_unit_name(const char *tty, char **ret);

/* Appends to *units (of *n entries) the rfid-reader@<instance>.service of every reader udev knows:
 * a hidraw, tty or input device with KEGBOT_RFID=1, each unit of its SYSTEMD_WANTS that is an
 * rfid-reader@ instance ("rfid-reader@ttyUSB0.service", "rfid-reader@input-event5.service": the
 * names as the rule computed them). A device without one (an input device's inputN parent, a
 * reader udev has not finished with) adds nothing. */
int boards_list_readers(struct udev *udev, char ***units, size_t *n);

/* Asks systemd (system bus) to start every unit of the list, without waiting for the jobs. Errors
 * are logged; returns the first one (0 if all went out). A unit systemd does not know (NoSuchUnit:
 * not installed) is only a WARNING: a run again would not change that. */
int boards_start(char *const *units);
