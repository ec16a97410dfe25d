/* Preloaded ahead of libfaketime by the scenario 32 test (test_event_backend.py): timerfds keep the
 * kernel's clocks. libfaketime (0.9.10) shifts every timerfd deadline by its wall-clock offset, even
 * for CLOCK_MONOTONIC with DONT_FAKE_MONOTONIC=1, so once the offset is not 0 sd-event's monotonic
 * timers fire at the wrong time or never; the clocks the core reads stay faked as configured. */
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

int timerfd_settime(int fd, int flags, const struct itimerspec *new_value, struct itimerspec *old_value) {
        return (int) syscall(SYS_timerfd_settime, fd, flags, new_value, old_value);
}

int timerfd_gettime(int fd, struct itimerspec *curr_value) {
        return (int) syscall(SYS_timerfd_gettime, fd, curr_value);
}
