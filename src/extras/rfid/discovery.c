/* Reader candidates: see discovery.h. */
#include "discovery.h"
#include "phidget.h"

static const char *const backend_names[_RFID_BACKEND_MAX] = {
        [RFID_BACKEND_AUTO] = "auto",
        [RFID_BACKEND_PHIDGET] = "phidget",
        [RFID_BACKEND_ID12] = "id12",
        [RFID_BACKEND_KEYBOARD] = "keyboard",
        [RFID_BACKEND_PHIDGET22] = "phidget22",
};

const char *rfid_backend_to_string(RfidBackend b) {
        return (unsigned) b < _RFID_BACKEND_MAX ? backend_names[b] : NULL;
}

RfidBackend rfid_backend_from_string(const char *s) {
        for (unsigned i = 0; i < _RFID_BACKEND_MAX; i++)
                if (streq_ptr(s, backend_names[i]))
                        return (RfidBackend) i;
        return _RFID_BACKEND_INVALID;
}

static bool is_event_node(const char *sysname) {
        const char *p = sysname ? startswith(sysname, "event") : NULL;
        return p && *p >= '0' && *p <= '9';
}

RfidBackend rfid_backend_for_subsystem(const char *subsystem, const char *sysname) {
        if (streq_ptr(subsystem, "hidraw"))
                return RFID_BACKEND_PHIDGET;
        if (streq_ptr(subsystem, "tty"))
                return RFID_BACKEND_ID12;
        if (streq_ptr(subsystem, "input") && is_event_node(sysname))
                return RFID_BACKEND_KEYBOARD;
        return _RFID_BACKEND_INVALID;
}

static RfidVerdict verdict(RfidVerdict v, const char *reason, const char **ret_reason) {
        if (ret_reason)
                *ret_reason = reason;
        return v;
}

RfidVerdict rfid_candidate(const RfidDeviceSnapshot *d, RfidBackend only, RfidBackend *ret_backend,
                           const char **ret_reason) {
        RfidBackend backend;
        PhidgetModel model;
        int r;

        assert_return(d && ret_backend, RFID_NOT_SILENT);

        if (streq_ptr(d->kegbot_rfid, "0"))
                return verdict(RFID_NOT_DEBUG, "vetoed by KEGBOT_RFID=0", ret_reason);

        if (streq_ptr(d->dev.subsystem, "hidraw"))
                backend = RFID_BACKEND_PHIDGET;
        else if (streq_ptr(d->dev.subsystem, "tty"))
                backend = RFID_BACKEND_ID12;
        else if (streq_ptr(d->dev.subsystem, "input"))
                backend = RFID_BACKEND_KEYBOARD;
        else
                return verdict(RFID_NOT_SILENT, "not a reader subsystem", ret_reason);
        if (only != RFID_BACKEND_AUTO && only != backend)
                return verdict(RFID_NOT_SILENT, "another kind of reader than --rfid_backend", ret_reason);

        switch (backend) {
        case RFID_BACKEND_PHIDGET:
                /* Only Phidgets are served over hidraw, whatever KEGBOT_RFID says. */
                if (!d->dev.has_usb_ids)
                        return verdict(RFID_NOT_SILENT, "no USB ids", ret_reason);
                r = phidget_model_from_ids(d->dev.vendor, d->dev.product, &model);
                if (r == -EOPNOTSUPP)
                        return verdict(RFID_NOT_INFO, "PhidgetRFID 1024 is not supported", ret_reason);
                if (r < 0)
                        return verdict(RFID_NOT_SILENT, "not a PhidgetRFID 1023", ret_reason);
                break;
        case RFID_BACKEND_ID12:
                if (!streq_ptr(d->kegbot_rfid, "1"))
                        return verdict(RFID_NOT_SILENT, "not opted in (KEGBOT_RFID=1)", ret_reason);
                break;
        default:
                if (!streq_ptr(d->kegbot_rfid, "1"))
                        return verdict(RFID_NOT_SILENT, "not opted in (KEGBOT_RFID=1)", ret_reason);
                /* The reader's other interfaces and its inputN parent are opted in too. */
                if (!is_event_node(d->dev.sysname) || isempty(d->dev.devnode))
                        return verdict(RFID_NOT_DEBUG, "not an event device node", ret_reason);
                if (!streq_ptr(d->id_input_keyboard, "1"))
                        return verdict(RFID_NOT_DEBUG, "not a keyboard (ID_INPUT_KEYBOARD)", ret_reason);
                break;
        }
        if (isempty(d->dev.devnode))
                return verdict(RFID_NOT_SILENT, "no device node", ret_reason);

        *ret_backend = backend;
        if (ret_reason)
                *ret_reason = NULL;
        return RFID_CANDIDATE;
}
