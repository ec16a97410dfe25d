/* kegnet FlowUpdates to the listeners, coalesced per flow (README, "kegnet: roles and
 * subscriptions"): while a flow is active its listeners get at most one FlowUpdate per interval
 * (100 ms in the core), always the newest snapshot; a flow's first update, every change of state or
 * owner, and its last update (idle, completed) go out at once and exactly, superseding a snapshot
 * still waiting. A snapshot held back is sent by a timer when the interval is over, so a pour that
 * stops shows its final volume within interval + accuracy. FlowUpdates are full snapshots, so a
 * listener loses nothing but intermediate counts; ticks are counted by the engine, not here. */
#pragma once

#include <systemd/sd-event.h>

#include "kegnet-server.h"
#include "macro.h"

typedef struct FlowUpdates FlowUpdates;

#define FLOW_UPDATES_INTERVAL_DEFAULT (100 * USEC_PER_MSEC)
/* How late the timer that sends a held snapshot may fire: a display refresh, not a count. */
#define FLOW_UPDATES_ACCURACY (50 * USEC_PER_MSEC)

int flow_updates_new(FlowUpdates **ret, sd_event *event, KegnetServer *server, uint64_t interval_usec);
FlowUpdates *flow_updates_free(FlowUpdates *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(FlowUpdates *, flow_updates_free);

/* A new snapshot of a flow (strings are copied when they change, never kept). */
void flow_updates_push(FlowUpdates *u, const KegnetFlowUpdate *f);
