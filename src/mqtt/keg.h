/* Keg data for kegbot_mqtt (mqtt-home-assistant.md section 4.5): GET <api_url>/taps from Kegbot
 * Server at start, when the core appears and every --mqtt_state_interval, through the project's
 * HTTP client on the event loop; the current keg of each tap the core has goes into the model. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "model.h"

typedef struct KegClient KegClient;

/* A tap's keg data changed; config: its keg entities appeared or went. */
typedef void (*KegChanged)(KegClient *k, Group *g, bool config, void *userdata);

/* Errors are logged (libcurl missing: -EOPNOTSUPP). */
int keg_client_new(KegClient **ret, sd_event *event, Model *model, const char *api_url, const char *api_key,
                   double timeout_sec, uint64_t interval_usec, KegChanged changed, void *userdata);
KegClient *keg_client_free(KegClient *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(KegClient *, keg_client_free);

/* Reads the taps now (unless a read is in flight) and restarts the interval. */
void keg_client_refresh(KegClient *k);
