/* Calibrations: see calibration.h. The pour itself (its ticks, deadline and relay) is the flow
 * engine's; this module decides what a finish means, asks the tap's backend to keep the value,
 * applies it through the tap registry and says what happened. */
#include <inttypes.h>
#include <stdarg.h>

#define LOG_COMPONENT "calibration"
#include "log.h"

#include "calibration.h"
#include "calibration-units.h"
#include "taps-edit.h"
#include "util-string.h"
#include "util-strv.h"
#include "util-time.h"

typedef struct Backend {
        const CalibrationBackend *ops;
        void *userdata;
} Backend;

/* A finish or set whose value is being stored (at most one per tap). */
typedef struct Pending {
        struct Pending *next;
        Calibrations *cal;
        char *meter;
        bool finish;                    /* false: SetCalibration */
        CalibrationRequest req;
        char *change_warning;           /* the >30 % warning, or NULL */
        Backend backend;                /* ops NULL: the taps file */
        void *handle;
        bool in_store, completed;
        CalibrationReply reply;
        void *reply_userdata;
} Pending;

struct Calibrations {
        Manager *manager;
        char *taps_file;
        uint64_t timeout_usec;
        Backend *backends;
        size_t n_backends;
        Pending *pending;
};

static const ManagerObserver calibration_observer;

const char *calibration_storage_to_string(CalibrationStorage s) {
        static const char *const names[_CALIBRATION_STORAGE_MAX] = {
                [CALIBRATION_STORAGE_TAPS_FILE] = "taps-file",
                [CALIBRATION_STORAGE_SERVER] = "server",
                [CALIBRATION_STORAGE_LOCAL_OVERRIDE] = "local-override",
                [CALIBRATION_STORAGE_MEMORY] = "memory",
        };
        return s >= 0 && s < _CALIBRATION_STORAGE_MAX ? names[s] : NULL;
}

static TapCalibrationSource storage_source(CalibrationStorage s) {
        switch (s) {
        case CALIBRATION_STORAGE_TAPS_FILE:
                return TAP_CALIBRATION_TAPS_FILE;
        case CALIBRATION_STORAGE_SERVER:
                return TAP_CALIBRATION_SERVER;
        case CALIBRATION_STORAGE_LOCAL_OVERRIDE:
                return TAP_CALIBRATION_LOCAL_OVERRIDE;
        default:
                return TAP_CALIBRATION_MEMORY;
        }
}

static FlowEngine *engine(Calibrations *c) {
        return manager_get_engine(c->manager);
}

static const Backend *backend_for(Calibrations *c, const char *meter) {
        for (size_t i = 0; i < c->n_backends; i++)
                if (c->backends[i].ops->owns(c->backends[i].userdata, meter))
                        return &c->backends[i];
        return NULL;
}

static Pending *pending_find(Calibrations *c, const char *meter) {
        for (Pending *p = c->pending; p; p = p->next)
                if (streq(p->meter, meter))
                        return p;
        return NULL;
}

static void pending_unlink(Calibrations *c, Pending *p) {
        for (Pending **q = &c->pending; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        return;
                }
}

static Pending *pending_free(Pending *p) {
        if (!p)
                return NULL;
        free(p->meter);
        free(p->change_warning);
        free(p);
        return NULL;
}

static int fail(char **ret_message, int r, const char *format, ...) _printf_(3, 4);
static int fail(char **ret_message, int r, const char *format, ...) {
        va_list ap;

        if (ret_message) {
                va_start(ap, format);
                *ret_message = strdup_vprintf(format, ap);
                va_end(ap);
        }
        return r;
}

static int shutting_down(char **ret_message) {
        return fail(ret_message, -ESHUTDOWN, "kegbot_core is shutting down");
}

/* The tap of 'meter', created on first sight where its backend allows that. */
static int tap_get(Calibrations *c, const char *meter, const Backend *b, FlowTapInfo *ret, char **ret_message) {
        if (flow_engine_get_tap(engine(c), meter, ret) >= 0)
                return 0;
        if (b && b->ops->taps_from_server)
                return fail(ret_message, -ENOENT, "No tap for meter %s: its taps come from Kegbot Server", meter);
        if (manager_create_tap(c->manager, meter) < 0 || flow_engine_get_tap(engine(c), meter, ret) < 0)
                return fail(ret_message, -ENOENT, "No tap for meter %s", meter);
        return 0;
}

int calibrations_start(Calibrations *c, const char *meter, char **ret_message) {
        const Backend *b = backend_for(c, meter);
        FlowTapInfo t;
        int r;

        if (manager_is_stopping(c->manager))
                return shutting_down(ret_message);
        r = tap_get(c, meter, b, &t, ret_message);
        if (r < 0)
                return r;
        if (pending_find(c, meter))
                return fail(ret_message, -EBUSY, "Tap %s is already being calibrated", meter);

        r = manager_start_calibration(c->manager, meter, c->timeout_usec, !(b && b->ops->relays_from_grants));
        switch (r) {
        case 0:
                return 0;
        case -ENOENT:
                return fail(ret_message, r, "No tap for meter %s", meter);
        case -EPERM:
                return fail(ret_message, r, "Tap %s is quarantined (ghost-pour rule G7); ClearQuarantine lifts it",
                            meter);
        case -EALREADY:
                return fail(ret_message, -EBUSY, "Tap %s is already being calibrated", meter);
        case -EBUSY:
                return fail(ret_message, r, "Tap %s has an active flow; stop it first", meter);
        case -ESHUTDOWN:
                return shutting_down(ret_message);
        default:
                return fail(ret_message, r, "Cannot start a calibration of %s: %s", meter, strerror(-r));
        }
}

/* ---- storing ---- */

static void result_reply(Pending *p, const CalibrationStored *s) {
        const CalibrationRequest *q = &p->req;
        _cleanup_(strv_freep) char **warnings = NULL;
        _cleanup_(freep) char *message = NULL, *memory_warning = NULL;
        const char *storage = calibration_storage_to_string(s->storage);
        const char *location = s->storage == CALIBRATION_STORAGE_MEMORY ? "" : s->location ?: "";
        double applied = s->applied_ml_per_tick;
        size_t n = 0;

        if (p->change_warning)
                (void) strv_extend(&warnings, &n, p->change_warning);
        if (s->warning)
                (void) strv_extend(&warnings, &n, s->warning);
        if (s->storage == CALIBRATION_STORAGE_MEMORY) {
                if (s->location)
                        memory_warning = strdup_printf("Could not save the calibration of %s to %s: %s; in use until "
                                                       "the next reload or restart", q->meter, s->location,
                                                       s->reason ?: "unknown reason");
                else
                        memory_warning = strdup_printf("Could not save the calibration of %s: %s; in use until the "
                                                       "next reload or restart", q->meter, s->reason ?: "unknown reason");
                if (memory_warning) {
                        log_error("%s", memory_warning);
                        (void) strv_extend(&warnings, &n, memory_warning);
                }
        }

        if (s->message)
                message = strdup(s->message);
        else
                switch (s->storage) {
                case CALIBRATION_STORAGE_TAPS_FILE:
                        message = strdup_printf("Saved to %s.", location);
                        break;
                case CALIBRATION_STORAGE_SERVER:
                        message = strdup_printf("Saved on Kegbot Server (%s); taps re-synced.", location);
                        break;
                case CALIBRATION_STORAGE_LOCAL_OVERRIDE:
                        message = strdup_printf("Kept locally in %s (Kegbot Server refuses calibrations).", location);
                        break;
                default:
                        message = strdup_printf("Not saved: %s. In use until the core reloads its taps or restarts.",
                                                s->reason ?: "unknown reason");
                        break;
                }

        if (p->finish)
                log_info("Calibration finished: meter=%s ticks=%" PRIu64 " volume_ml=%.1f ml_per_tick %g -> %g "
                         "(%+.2f %%), stored: %s %s", q->meter, q->ticks, q->volume_ml, q->old_ml_per_tick, applied,
                         calibration_change_percent(q->old_ml_per_tick, applied), storage, location);
        else
                log_info("Calibration set: meter=%s ml_per_tick %g -> %g, stored: %s %s", q->meter, q->old_ml_per_tick,
                         applied, storage, location);

        if (!p->reply)
                return;
        if (!warnings) {
                warnings = calloc(1, sizeof(char *));
                if (!warnings) {
                        p->reply(-ENOMEM, "out of memory", NULL, p->reply_userdata);
                        return;
                }
        }
        p->reply(0, NULL, &(CalibrationResult) {
                .meter = q->meter,
                .ticks = q->ticks,
                .volume_ml = q->volume_ml,
                .old_ml_per_tick = q->old_ml_per_tick,
                .new_ml_per_tick = applied,
                .change_percent = calibration_change_percent(q->old_ml_per_tick, applied),
                .old_volume_ml = (double) q->ticks * q->old_ml_per_tick,
                .storage = storage,
                .location = location,
                .warnings = warnings,
                .message = message ?: "",
        }, p->reply_userdata);
}

static void store_done(const CalibrationStored *s, void *userdata) {
        Pending *p = userdata;
        Calibrations *c = p->cal;
        int r;

        p->completed = true;
        pending_unlink(c, p);
        if (p->finish)
                (void) manager_calibration_set_storing(c->manager, p->meter, false);

        if (s->error < 0) {
                /* Not stored: the calibration keeps running; finish again later. */
                if (p->reply)
                        p->reply(-EREMOTEIO, s->message ?: "Kegbot Server did not store the calibration", NULL,
                                 p->reply_userdata);
                goto done;
        }

        r = tap_registry_set_calibration(manager_get_taps(c->manager), p->meter, s->applied_ml_per_tick,
                                         storage_source(s->storage));
        if (r < 0)
                log_warning_errno(r, "Cannot apply the calibration of %s: %m", p->meter);
        if (p->finish && manager_end_calibration(c->manager, p->meter, FLOW_CALIBRATION_FINISHED,
                                                 p->req.old_ml_per_tick) < 0)
                log_debug("The calibration of %s ended while its result was stored", p->meter);
        result_reply(p, s);
done:
        if (!p->in_store)
                pending_free(p);
}

/* Starts storing 'p' (already listed) with the meter's backend or the taps file. */
static void store_start(Calibrations *c, Pending *p) {
        void *handle = NULL;

        p->in_store = true;
        if (p->backend.ops)
                p->backend.ops->store(p->backend.userdata, &p->req, store_done, p, &handle);
        else
                calibrations_store_taps_file(c, &p->req, store_done, p);
        p->in_store = false;
        if (p->completed)
                pending_free(p);
        else
                p->handle = handle;
}

static int validate_text(const char *name, const char *text, size_t len, const char *meter, double *ret_ml_per_tick,
                         char **ret_error, void *userdata) {
        Calibrations *c = userdata;
        return tap_registry_check_text(manager_get_taps(c->manager), name, text, len, meter, ret_ml_per_tick, ret_error);
}

void calibrations_store_taps_file(Calibrations *c, const CalibrationRequest *req, CalibrationStoreDone done,
                                  void *userdata) {
        _cleanup_(freep) char *provenance = NULL, *target = NULL, *reason = NULL;
        char when[TIME_RFC3339_MAX];
        double applied = req->new_ml_per_tick;
        int r;

        if (isempty(c->taps_file)) {
                done(&(CalibrationStored) {
                        .storage = CALIBRATION_STORAGE_MEMORY,
                        .applied_ml_per_tick = applied,
                        .reason = "no --taps_file",
                }, userdata);
                return;
        }

        if (time_format_rfc3339(req->time_realtime, when) < 0)
                snprintf(when, sizeof when, "unknown");
        if (req->ticks > 0)
                provenance = strdup_printf("# calibration %s: %g mL over %" PRIu64 " ticks, was %g mL/tick", when,
                                           req->volume_ml, req->ticks, req->old_ml_per_tick);
        else
                provenance = strdup_printf("# calibration %s: set, was %g mL/tick", when, req->old_ml_per_tick);
        if (!provenance)
                r = strdup_error(&reason, -ENOMEM, "out of memory");
        else
                r = taps_file_store(&(TapsFileStore) {
                        .path = c->taps_file,
                        .meter = req->meter,
                        .ml_per_tick = req->new_ml_per_tick,
                        .provenance = provenance,
                        .validate = validate_text,
                        .userdata = c,
                }, &target, &applied, &reason);
        if (r < 0) {
                done(&(CalibrationStored) {
                        .storage = CALIBRATION_STORAGE_MEMORY,
                        .applied_ml_per_tick = req->new_ml_per_tick,
                        .location = target ?: c->taps_file,
                        .reason = reason ?: strerror(-r),
                }, userdata);
                return;
        }
        done(&(CalibrationStored) {
                .storage = CALIBRATION_STORAGE_TAPS_FILE,
                .applied_ml_per_tick = applied,
                .location = target,
        }, userdata);
}

static Pending *pending_new(Calibrations *c, const char *meter, bool finish, CalibrationReply reply, void *userdata) {
        Pending *p = calloc(1, sizeof(Pending));

        if (!p)
                return NULL;
        p->meter = strdup(meter);
        if (!p->meter)
                return pending_free(p);
        p->cal = c;
        p->finish = finish;
        if (backend_for(c, meter))
                p->backend = *backend_for(c, meter);
        p->reply = reply;
        p->reply_userdata = userdata;
        p->req.meter = p->meter;
        p->req.time_realtime = manager_now_realtime(c->manager);
        return p;
}

/* The >30 % warning (calibration.md section 2.4 step 5). */
static int check_change(Pending *p) {
        const CalibrationRequest *q = &p->req;
        double change = calibration_change_percent(q->old_ml_per_tick, q->new_ml_per_tick);

        if (!calibration_change_is_large(q->old_ml_per_tick, q->new_ml_per_tick))
                return 0;
        log_warning("Calibration of %s changes ml_per_tick by %+.1f %% (more than 30 %%): %g -> %g", q->meter, change,
                    q->old_ml_per_tick, q->new_ml_per_tick);
        p->change_warning = strdup_printf("the calibration changes by %+.1f %%, more than 30 %%: check the measurement "
                                          "and the meter", change);
        return p->change_warning ? 0 : -ENOMEM;
}

static int rejected(const char *meter, char **ret_message, const char *format, ...) _printf_(3, 4);
static int rejected(const char *meter, char **ret_message, const char *format, ...) {
        _cleanup_(freep) char *m = NULL;
        va_list ap;

        va_start(ap, format);
        m = strdup_vprintf(format, ap);
        va_end(ap);
        log_warning("Calibration rejected: meter=%s: %s; still running", meter, m ?: "out of memory");
        if (ret_message)
                *ret_message = TAKE_PTR(m);
        return -EDOM;
}

int calibrations_finish(Calibrations *c, const char *meter, double measured_ml, CalibrationReply reply,
                        void *userdata, char **ret_message) {
        FlowCalibrationInfo info;
        FlowTapInfo t;
        Pending *p;
        double mpt;
        int r;

        if (manager_is_stopping(c->manager))
                return shutting_down(ret_message);
        if (!(measured_ml > 0))
                return fail(ret_message, -EINVAL, "The measured volume must be more than 0 mL");
        if (flow_engine_get_calibration(engine(c), meter, &info) < 0)
                return fail(ret_message, -ESRCH, "No calibration of %s is running", meter);
        if (pending_find(c, meter))
                return fail(ret_message, -EBUSY, "The result of the calibration of %s is being stored", meter);
        if (flow_engine_get_tap(engine(c), meter, &t) < 0)
                return fail(ret_message, -ENOENT, "No tap for meter %s", meter);

        if (info.ticks < CALIBRATION_MIN_TICKS)
                return rejected(meter, ret_message, "only %" PRIu64 " ticks counted; at least %d are needed (pour "
                                "500 mL or more)", info.ticks, CALIBRATION_MIN_TICKS);
        mpt = calibration_round6(measured_ml / (double) info.ticks);
        if (!calibration_ml_per_tick_is_valid(mpt))
                return rejected(meter, ret_message, "%g mL/tick is outside %g-%g mL/tick; check the measured volume "
                                "(%g mL for %" PRIu64 " ticks)", mpt, CALIBRATION_ML_PER_TICK_MIN,
                                CALIBRATION_ML_PER_TICK_MAX, measured_ml, info.ticks);

        p = pending_new(c, meter, true, reply, userdata);
        if (!p)
                return fail(ret_message, -ENOMEM, "Out of memory");
        p->req.ticks = info.ticks;
        p->req.volume_ml = measured_ml;
        p->req.old_ml_per_tick = t.ml_per_tick;
        p->req.new_ml_per_tick = mpt;
        r = check_change(p);
        if (r < 0) {
                pending_free(p);
                return fail(ret_message, r, "Out of memory");
        }

        /* While it is stored, the deadline waits (section 2.4 step 7). */
        (void) manager_calibration_set_storing(c->manager, meter, true);
        p->next = c->pending;
        c->pending = p;
        store_start(c, p);
        return 0;
}

int calibrations_set(Calibrations *c, const char *meter, double ml_per_tick, CalibrationReply reply, void *userdata,
                     char **ret_message) {
        const Backend *b = backend_for(c, meter);
        FlowTapInfo t;
        Pending *p;
        int r;

        if (manager_is_stopping(c->manager))
                return shutting_down(ret_message);
        if (!calibration_ml_per_tick_is_valid(ml_per_tick))
                return fail(ret_message, -EINVAL, "ml_per_tick must be within %g-%g", CALIBRATION_ML_PER_TICK_MIN,
                            CALIBRATION_ML_PER_TICK_MAX);
        r = tap_get(c, meter, b, &t, ret_message);
        if (r < 0)
                return r;
        if (t.calibrating)
                return fail(ret_message, -EBUSY, "Tap %s is being calibrated; finish or cancel that first", meter);
        if (pending_find(c, meter))
                return fail(ret_message, -EBUSY, "A calibration of %s is being stored", meter);

        p = pending_new(c, meter, false, reply, userdata);
        if (!p)
                return fail(ret_message, -ENOMEM, "Out of memory");
        p->req.old_ml_per_tick = t.ml_per_tick;
        p->req.new_ml_per_tick = calibration_round6(ml_per_tick);
        r = check_change(p);
        if (r < 0) {
                pending_free(p);
                return fail(ret_message, r, "Out of memory");
        }
        p->next = c->pending;
        c->pending = p;
        store_start(c, p);
        return 0;
}

int calibrations_cancel(Calibrations *c, const char *meter, uint64_t *ret_ticks, char **ret_message) {
        int64_t ticks;

        if (manager_is_stopping(c->manager))
                return shutting_down(ret_message);
        if (pending_find(c, meter))
                return fail(ret_message, -EBUSY, "The result of the calibration of %s is being stored", meter);
        ticks = manager_end_calibration(c->manager, meter, FLOW_CALIBRATION_CANCELLED, 0);
        if (ticks < 0)
                return fail(ret_message, -ESRCH, "No calibration of %s is running", meter);
        *ret_ticks = (uint64_t) ticks;
        return 0;
}

/* ---- the engine's events ---- */

static void on_calibration_event(Manager *m, const FlowEvent *ev, void *userdata) {
        Calibrations *c = userdata;
        const char *meter = ev->meter_name;
        uint64_t ticks = ev->calibration.ticks;

        if (ev->calibration.change == FLOW_CALIBRATION_STARTED) {
                FlowCalibrationInfo info;
                FlowTapInfo t;

                if (flow_engine_get_calibration(manager_get_engine(m), meter, &info) < 0 ||
                    flow_engine_get_tap(manager_get_engine(m), meter, &t) < 0)
                        return;
                log_info("Calibration started: meter=%s ml_per_tick=%g relay=%s timeout=%" PRIu64 "s", meter,
                         t.ml_per_tick, info.relay_name ?: "none", c->timeout_usec / USEC_PER_SEC);
                return;
        }
        if (ev->calibration.change != FLOW_CALIBRATION_ENDED)
                return;
        switch (ev->calibration.reason) {
        case FLOW_CALIBRATION_CANCELLED:
                log_info("Calibration cancelled: meter=%s ticks=%" PRIu64, meter, ticks);
                break;
        case FLOW_CALIBRATION_TIMEOUT:
                log_warning("Calibration timed out: meter=%s ticks=%" PRIu64 "; calibration unchanged", meter, ticks);
                break;
        case FLOW_CALIBRATION_TAP_REMOVED:
                log_warning("Calibration of %s cancelled: tap removed", meter);
                break;
        case FLOW_CALIBRATION_SHUTDOWN:
                log_info("Calibration of %s cancelled: shutdown", meter);
                break;
        default:
                break;          /* finished: the finish logs the result */
        }
}

/* Before the engine ends the calibrations: a result being stored is abandoned. */
static void on_stopping(Manager *m, void *userdata) {
        Calibrations *c = userdata;

        while (c->pending) {
                Pending *p = c->pending;

                c->pending = p->next;
                if (p->backend.ops && p->backend.ops->cancel)
                        p->backend.ops->cancel(p->backend.userdata, p->handle);
                log_info("Storing the calibration of %s abandoned: shutdown", p->meter);
                if (p->reply)
                        p->reply(-ESHUTDOWN, "kegbot_core is shutting down", NULL, p->reply_userdata);
                pending_free(p);
        }
}

static const ManagerObserver calibration_observer = {
        .calibration_event = on_calibration_event,
        .stopping = on_stopping,
};

int calibrations_new(Calibrations **ret, Manager *m, const CalibrationConfig *config) {
        _cleanup_(calibrations_freep) Calibrations *c = NULL;
        int r;

        c = calloc(1, sizeof(Calibrations));
        if (!c)
                return log_error_errno(-ENOMEM, "Out of memory");
        c->manager = m;
        c->timeout_usec = config->timeout_usec;
        c->taps_file = strdup(config->taps_file ?: "");
        if (!c->taps_file)
                return log_error_errno(-ENOMEM, "Out of memory");
        r = manager_add_observer(m, &calibration_observer, c);
        if (r < 0)
                return log_error_errno(r, "Out of memory");
        *ret = TAKE_PTR(c);
        return 0;
}

Calibrations *calibrations_free(Calibrations *c) {
        if (!c)
                return NULL;
        if (c->manager)
                manager_remove_observer(c->manager, &calibration_observer, c);
        while (c->pending) {
                Pending *p = c->pending;

                c->pending = p->next;
                if (p->backend.ops && p->backend.ops->cancel)
                        p->backend.ops->cancel(p->backend.userdata, p->handle);
                pending_free(p);
        }
        free(c->backends);
        free(c->taps_file);
        free(c);
        return NULL;
}

int calibrations_add_backend(Calibrations *c, const CalibrationBackend *backend, void *userdata) {
        Backend *a;

        assert_return(c && backend && backend->owns && backend->store, -EINVAL);
        a = reallocarray(c->backends, c->n_backends + 1, sizeof(Backend));
        if (!a)
                return -ENOMEM;
        c->backends = a;
        c->backends[c->n_backends++] = (Backend) { .ops = backend, .userdata = userdata };
        return 0;
}
