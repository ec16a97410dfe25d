/* kegboard_daemon --start_boards: what kegbot-boards.service runs when kegbot.target starts. udev
 * starts a kegboard-daemon@<tty> when a board is plugged in (70-kegboard.rules, SYSTEMD_WANTS), but
 * only then: after `systemctl stop kegbot.target` (which stops the daemons, PartOf=) nothing would
 * start them again for boards that stay plugged in. The same rule gives every port it nominates a
 * link in /dev/kegboard/, so the boards present are those links' targets. */
#pragma once

#include "macro.h"

#define BOARDS_DIR "/dev/kegboard"

/* The tty names ("ttyUSB0") the links in 'dir' point to, sorted, each once; a missing directory is
 * an empty list. Links to something that is no plain device name are skipped (DEBUG). */
int boards_list(const char *dir, char ***ret);

/* "kegboard-daemon@<tty>.service" for a tty name from boards_list(). */
int boards_unit_name(const char *tty, char **ret);

/* Asks systemd (system bus) to start kegboard-daemon@<tty>.service for every tty in the list,
 * without waiting for the jobs. Errors are logged; returns the first one (0 if all went out). */
int boards_start(char *const *ttys);
