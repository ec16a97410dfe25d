/* Temperature sensors: see thermo.h. Sensors are few (one per probe), so a plain array with linear
 * lookup is the simplest thing that is fast enough. */
#include <inttypes.h>
#include <math.h>

#define LOG_COMPONENT "ThermoManager"
#include "log.h"

#include "thermo.h"
#include "util-ratelimit.h"

/* Sensor names come from kegnet peers: these lines are rate-limited per kind. */
static LogRateLimit rl_new = LOG_RATELIMIT_DEFAULT("new temperature sensor messages");
static LogRateLimit rl_dropped = LOG_RATELIMIT_DEFAULT("out-of-range temperature messages");
static LogRateLimit rl_table = LOG_RATELIMIT_DEFAULT("temperature sensor table messages");
static LogRateLimit rl_silent = LOG_RATELIMIT_DEFAULT("silent temperature sensor messages");

struct ThermoManager {
        ThermoSensor *sensors;
        size_t n_sensors;
        ThermoEvictHandler on_evict;
        void *evict_userdata;
};

int thermo_manager_new(ThermoManager **ret) {
        ThermoManager *t = calloc(1, sizeof(ThermoManager));
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

void thermo_manager_set_evict_handler(ThermoManager *t, ThermoEvictHandler handler, void *userdata) {
        t->on_evict = handler;
        t->evict_userdata = userdata;
}

ThermoManager *thermo_manager_free(ThermoManager *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_sensors; i++)
                free(t->sensors[i].name);
        free(t->sensors);
        free(t);
        return NULL;
}

static ThermoSensor *find(const ThermoManager *t, const char *name) {
        for (size_t i = 0; i < t->n_sensors; i++)
                if (streq(t->sensors[i].name, name))
                        return &t->sensors[i];
        return NULL;
}

const ThermoSensor *thermo_manager_find(const ThermoManager *t, const char *name) {
        return find(t, name);
}

ThermoResult thermo_manager_reading(ThermoManager *t, const char *sensor, double value_c,
                                    uint64_t monotonic, uint64_t realtime, const ThermoSensor **ret_sensor) {
        ThermoSensor *s;
        bool first;

        if (ret_sensor)
                *ret_sensor = NULL;

        /* Also drops the DS18B20 power-on value 85.0. */
        if (!isfinite(value_c) || value_c < THERMO_MIN_C || value_c > THERMO_MAX_C) {
                log_ratelimited(&rl_dropped, LOG_DEBUG, "Dropping out-of-range reading sensor=%s value=%g", sensor, value_c);
                return THERMO_DROPPED;
        }

        s = find(t, sensor);
        if (!s) {
                char *name = strdup(sensor);
                if (!name)
                        return THERMO_DROPPED;
                if (t->n_sensors >= THERMO_MAX_SENSORS) {
                        ThermoSensor *victim = &t->sensors[0];
                        for (size_t i = 1; i < t->n_sensors; i++)
                                if (t->sensors[i].last_seen_monotonic < victim->last_seen_monotonic)
                                        victim = &t->sensors[i];
                        log_ratelimited(&rl_table, LOG_WARNING,
                                        "Temperature sensor table full (%u): forgetting sensor %s (last seen %" PRIu64 " s ago) for %s",
                                        THERMO_MAX_SENSORS, victim->name,
                                        (monotonic - MIN(monotonic, victim->last_seen_monotonic)) / USEC_PER_SEC, sensor);
                        if (t->on_evict)
                                t->on_evict(victim, t->evict_userdata);
                        free(victim->name);
                        s = victim;
                } else {
                        ThermoSensor *n = realloc(t->sensors, (t->n_sensors + 1) * sizeof(ThermoSensor));
                        if (!n) {
                                free(name);
                                return THERMO_DROPPED;
                        }
                        t->sensors = n;
                        s = &t->sensors[t->n_sensors++];
                }
                *s = (ThermoSensor) {
                        .name = name,
                        .last_recorded_minute = -1,
                        .silent = true,         /* so that its first reading is logged at INFO */
                };
        }

        first = s->silent;
        s->silent = false;
        s->value = value_c;
        s->last_seen_realtime = realtime;
        s->last_seen_monotonic = monotonic;

        if (first)
                log_ratelimited(&rl_new, LOG_INFO,
                                "Recording temperature sensor=%s value=%g (further readings are logged only with --verbose)",
                                sensor, value_c);
        else
                log_debug("Recording temperature sensor=%s value=%g", sensor, value_c);

        if (ret_sensor)
                *ret_sensor = s;

        int64_t minute = (int64_t) (realtime / USEC_PER_SEC / 60);
        if (minute == s->last_recorded_minute) {
                log_debug("Dropping excessive temp event sensor=%s", sensor);
                return THERMO_ACCEPTED;
        }
        s->last_recorded_minute = minute;
        return THERMO_RECORD;
}

uint64_t thermo_manager_next_deadline(const ThermoManager *t) {
        uint64_t next = THERMO_NO_DEADLINE;

        for (size_t i = 0; i < t->n_sensors; i++) {
                const ThermoSensor *s = &t->sensors[i];
                if (s->silent)
                        continue;
                /* "More than 2 minutes": one microsecond past the limit. */
                next = MIN(next, s->last_seen_monotonic + THERMO_SILENCE_USEC + 1);
        }
        return next;
}

int thermo_manager_process_deadlines(ThermoManager *t, uint64_t monotonic, ThermoSilentHandler on_silent,
                                     void *userdata) {
        int n = 0;

        for (size_t i = 0; i < t->n_sensors; i++) {
                ThermoSensor *s = &t->sensors[i];
                if (s->silent || monotonic <= s->last_seen_monotonic + THERMO_SILENCE_USEC)
                        continue;
                s->silent = true;
                log_ratelimited(&rl_silent, LOG_WARNING, "Stopped receiving updates for thermo sensor %s", s->name);
                if (on_silent)
                        on_silent(s, userdata);
                n++;
        }
        return n;
}

size_t thermo_manager_n_sensors(const ThermoManager *t) {
        return t->n_sensors;
}

const ThermoSensor *thermo_manager_sensor_at(const ThermoManager *t, size_t i) {
        return i < t->n_sensors ? &t->sensors[i] : NULL;
}
