/* Small sd-bus helpers the D-Bus clients of kegbot_core share (kegbot_calibrate, core-watch): reading
 * the a{sv} dictionaries that Properties.GetAll, the ObjectManager and the calibration results use. */
#pragma once

#include <systemd/sd-bus.h>

/* Called for each entry with the variant entered; 'contents' is its type ("s", "d", "as", ...).
 * Reads the value and returns > 0, returns 0 to have it skipped (a key or type it does not use), or
 * a negative errno to stop. */
typedef int (*BusDictEntryFunc)(sd_bus_message *m, const char *key, const char *contents, void *userdata);

/* Reads an a{sv} at the current position of 'm', entry by entry, through 'entry'. */
int bus_message_read_dict(sd_bus_message *m, BusDictEntryFunc entry, void *userdata);

/* Reads an "s" and replaces *ret (freed) with a copy. */
int bus_message_read_strdup(sd_bus_message *m, char **ret);
