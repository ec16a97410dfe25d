/* The thermo log: see thermo-log.h. */
#include <fcntl.h>

#define LOG_COMPONENT "ThermoManager"
#include "log.h"

#include "json-writer.h"
#include "thermo-log.h"
#include "util-io.h"

struct ThermoLog {
        char *path;
        int fd;
};

int thermo_log_reopen(ThermoLog *l) {
        int fd;

        assert_return(l, -EINVAL);

        fd = open(l->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %m", l->path);
        safe_close(l->fd);
        l->fd = fd;
        return 0;
}

int thermo_log_new(ThermoLog **ret, const char *state_dir) {
        _cleanup_(thermo_log_freep) ThermoLog *l = NULL;
        int r;

        assert_return(ret, -EINVAL);
        assert_return(!isempty(state_dir), -EINVAL);

        l = calloc(1, sizeof(ThermoLog));
        if (!l)
                return -ENOMEM;
        l->fd = -1;
        if (asprintf(&l->path, "%s/thermo.log", state_dir) < 0) {
                l->path = NULL;
                return -ENOMEM;
        }
        r = thermo_log_reopen(l);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

ThermoLog *thermo_log_free(ThermoLog *l) {
        if (!l)
                return NULL;
        safe_close(l->fd);
        free(l->path);
        free(l);
        return NULL;
}

int thermo_log_append(ThermoLog *l, const char *sensor, double value_c, uint64_t realtime) {
        JsonWriter w = JSON_WRITER_INIT;
        _cleanup_(freep) char *line = NULL;
        size_t len;
        int r;

        assert_return(l, -EINVAL);

        json_writer_object_begin(&w);
        json_writer_field_string(&w, "sensor_name", sensor);
        json_writer_field_double(&w, "temperature_c", value_c);
        json_writer_field_timestamp(&w, "time", realtime);
        json_writer_object_end(&w);
        r = json_writer_finish_with(&w, "\n", &line, &len);
        if (r >= 0)
                r = l->fd >= 0 ? io_write_all(l->fd, line, len) : -EBADF;
        if (r < 0)
                log_warning_errno(r, "Cannot append to %s: %m", l->path);
        return r;
}
