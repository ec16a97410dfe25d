/* <state_dir>/quarantine.json (ghost-pours.md section 9): the taps the ghost filter quarantined
 * (rule G7) survive a restart. Written atomically whenever a quarantine is set or cleared in "on"
 * mode, read at start-up; an unreadable or corrupt file is a WARNING and means no quarantine. */
#pragma once

#include "flow.h"

#define QUARANTINE_FILE "quarantine.json"
/* A file this large is not ours: refused. */
#define QUARANTINE_FILE_MAX (1024 * 1024)

/* Every meter the engine holds quarantined, as the file's JSON (a line). */
int quarantine_format(FlowEngine *e, char **ret);
/* Writes the engine's quarantines to <state_dir>/quarantine.json. Errors are logged and returned. */
int quarantine_save(FlowEngine *e, const char *state_dir);
/* Restores the quarantines of <state_dir>/quarantine.json into the engine; returns how many. A
 * missing file is none; an unreadable or invalid one is logged (WARNING) and is none too. */
int quarantine_load(FlowEngine *e, const char *state_dir);
