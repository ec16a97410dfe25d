/* kegbot_core's calibrations (calibration.md): what the D-Bus methods StartCalibration,
 * FinishCalibration(ByWeight), CancelCalibration and SetCalibration do around the flow engine's
 * calibration pour - the checks and the result, the log lines of section 7, and the storage of a
 * new value by the tap's backend. Storage is per backend (section 4): a backend that keeps some
 * meters' calibrations (the legacy Kegbot Server API keeps a legacy controller's on the server)
 * plugs in a CalibrationBackend; every other meter is standalone and its calibration goes to the
 * taps file (calibrations_store_taps_file(), which a backend may use too). A store may answer
 * later: the D-Bus call is answered when it does. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "manager.h"

typedef struct Calibrations Calibrations;

typedef struct CalibrationConfig {
        const char *taps_file;          /* "" = none: storage "memory" */
        uint64_t timeout_usec;          /* --calibration_timeout_s */
} CalibrationConfig;

typedef enum CalibrationStorage {
        CALIBRATION_STORAGE_TAPS_FILE,
        CALIBRATION_STORAGE_SERVER,
        CALIBRATION_STORAGE_LOCAL_OVERRIDE,
        CALIBRATION_STORAGE_MEMORY,
        _CALIBRATION_STORAGE_MAX,
} CalibrationStorage;

/* "taps-file", "server", "local-override", "memory". */
const char *calibration_storage_to_string(CalibrationStorage s);

/* What a store keeps. */
typedef struct CalibrationRequest {
        const char *meter;
        uint64_t ticks;                 /* 0 for a known value set without a pour */
        double volume_ml;               /* 0 likewise */
        double old_ml_per_tick;
        double new_ml_per_tick;         /* rounded (calibration_round6()) */
        uint64_t time_realtime;         /* when it was finished or set */
} CalibrationRequest;

/* How storing went. */
typedef struct CalibrationStored {
        /* < 0: not stored because a server refused it or is unreachable (D-Bus ServerError,
         * 'message' says why); the calibration keeps running. Otherwise the value is applied. */
        int error;
        CalibrationStorage storage;
        double applied_ml_per_tick;     /* what the tap gets (a taps file may round differently) */
        const char *location;           /* the file or URL written; memory: the file that failed, or NULL */
        const char *reason;             /* memory: why it could not be saved */
        const char *warning;            /* a consequence to explain (410), or NULL */
        const char *message;            /* the sentence for the user; NULL: the storage's usual one */
} CalibrationStored;

typedef void (*CalibrationStoreDone)(const CalibrationStored *s, void *userdata);

typedef struct CalibrationBackend {
        /* Does this backend keep the calibration of 'meter' (its controller's)? */
        bool (*owns)(void *userdata, const char *meter);
        /* Its taps come from a server: an unknown meter is UnknownMeter, never a first-sight tap. */
        bool taps_from_server;
        /* Its valves open only for the server's grants (the event protocol, section 2.2 step 3): a
         * calibration pour does not hold the tap's relay. */
        bool relays_from_grants;
        /* Stores 'req' and calls 'done' exactly once (perhaps before it returns) unless cancel()
         * comes first. *ret_handle identifies the store for cancel(). */
        void (*store)(void *userdata, const CalibrationRequest *req, CalibrationStoreDone done, void *done_userdata,
                      void **ret_handle);
        /* The core is stopping: the store is abandoned, 'done' is not called. */
        void (*cancel)(void *userdata, void *handle);
} CalibrationBackend;

/* The result of FinishCalibration / SetCalibration (calibration.md section 5). Valid during the
 * reply call. */
typedef struct CalibrationResult {
        const char *meter;
        uint64_t ticks;
        double volume_ml;
        double old_ml_per_tick, new_ml_per_tick;
        double change_percent;
        double old_volume_ml;
        const char *storage;
        const char *location;
        char **warnings;                /* NULL-terminated */
        const char *message;
} CalibrationResult;

/* Errors of the operations (the D-Bus error each becomes): -ESHUTDOWN ShuttingDown, -ENOENT
 * UnknownMeter, -EPERM Quarantined, -EBUSY Busy, -ESRCH NotCalibrating, -EDOM CalibrationRejected,
 * -EINVAL InvalidArgs, -EREMOTEIO ServerError; each with a message. */

/* The answer to a finish or set: error 0 and a result, or an error and its message. */
typedef void (*CalibrationReply)(int error, const char *message, const CalibrationResult *result, void *userdata);

int calibrations_new(Calibrations **ret, Manager *m, const CalibrationConfig *config);
/* Pending stores are cancelled without replies. */
Calibrations *calibrations_free(Calibrations *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Calibrations *, calibrations_free);

int calibrations_add_backend(Calibrations *c, const CalibrationBackend *backend, void *userdata);

/* StartCalibration. 0, or an error with *ret_message (free it). */
int calibrations_start(Calibrations *c, const char *meter, char **ret_message);
/* FinishCalibration with the measured volume (> 0; the caller checks the D-Bus arguments). 0: the
 * reply comes (perhaps already came) through 'reply'; else an error with *ret_message. */
int calibrations_finish(Calibrations *c, const char *meter, double measured_ml, CalibrationReply reply,
                        void *userdata, char **ret_message);
/* CancelCalibration: the ticks counted. */
int calibrations_cancel(Calibrations *c, const char *meter, uint64_t *ret_ticks, char **ret_message);
/* SetCalibration with a known value (0.02..5, the caller checks). As calibrations_finish(). */
int calibrations_set(Calibrations *c, const char *meter, double ml_per_tick, CalibrationReply reply, void *userdata,
                     char **ret_message);

/* The standalone store: the taps file (calibration.md section 4.1), falling back to memory. Calls
 * 'done' before it returns. */
void calibrations_store_taps_file(Calibrations *c, const CalibrationRequest *req, CalibrationStoreDone done,
                                  void *userdata);
