/* sound_server's pour thresholds (programs-and-flags.md section 10) as pure code: which threshold,
 * if any, a FlowUpdate crosses, and how a sound URL maps to a cache file name. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define SOUND_ML_PER_OUNCE 29.57353

/* Checked in this order; the first one crossed fires. */
extern const int sound_thresholds[7];

/* The first threshold T with last < T <= current, or -1. 'last' is -1 for a new flow. */
int sound_threshold_crossed(double last_oz, double current_oz);

/* The file name a sound URL is cached under: the last path segment of an absolute http(s) URL
 * (query and fragment cut off). -EINVAL when the URL is not absolute http/https or has no usable
 * name ("", ".", ".."). *ret is malloc'ed. */
int sound_url_basename(const char *url, char **ret);
