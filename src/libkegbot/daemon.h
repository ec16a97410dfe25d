/* Process conventions of programs-and-flags.md section 3: --daemon (double fork), --pidfile
 * (pycore semantics, removed at exit), sd_notify helpers and the standard signal set-up on an
 * sd_event loop (SIGTERM/SIGINT/SIGQUIT stop it with 0, SIGHUP reopens logs). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "kegnet-client.h"
#include "macro.h"

/* Section 3.3 check: if 'path' exists, read its first line as a PID; unreadable or not a number ->
 * logs "Could not read pid, abort." and returns -EBADMSG; alive -> logs "Old pid <n> is still
 * alive, aborting" and returns -EEXIST. 0 if the file is absent or names a dead process. */
int daemon_pidfile_check(const char *path);

/* Write "<pid>\n" (mode 0644, replacing the file atomically) and remember the path (made absolute)
 * so daemon_pidfile_remove() and the atexit() net remove it; only the process that wrote it ever
 * removes it. Logs and returns a negative errno on failure. */
int daemon_pidfile_write(const char *path);

/* Remove the pidfile written by this process, if any. */
void daemon_pidfile_remove(void);

/* Section 3.2: logs "Daemon mode requested, switching to background.", forks, setsid(), forks
 * again, umask(022), chdir("/"), writes 'pidfile' (if non-empty) with the final PID, points
 * stdin/stdout/stderr at /dev/null, turns console logging off and logs "Running in background.".
 * Returns 0 in the background process. The original process waits until the background one is
 * running (or failed) and exits 0 (or 1) itself; it never returns. Relative paths ('pidfile', the
 * log file) are resolved before the chdir. A negative errno if the first fork fails. */
int daemon_daemonize(const char *pidfile);

/* sd_notify() wrappers; harmless without systemd (NOTIFY_SOCKET unset). */
int daemon_notify_ready(const char *status_format, ...) _printf_(1, 2);  /* READY=1 [+ STATUS=] */
int daemon_notify_status(const char *format, ...) _printf_(1, 2);
int daemon_notify_stopping(void);

/* Blocks the n signals in the calling thread (sd-event's signal sources and child watches need
 * them blocked). */
int daemon_block_signals(const int *signals, size_t n);

/* The one signal set-up: blocks the n signals and watches each on 'e' with 'handler'. With
 * ret_sources (n slots, filled in the same order) the caller owns the sources; without, they are
 * floating (owned by the loop). Errors are logged. */
int daemon_watch_signals(sd_event *e, const int *signals, size_t n, sd_event_signal_handler_t handler,
                         void *userdata, sd_event_source **ret_sources);

/* Called on SIGHUP after the log file has been reopened. */
typedef void (*DaemonReloadHandler)(void *userdata);

/* Block SIGTERM, SIGINT, SIGQUIT, SIGHUP and add them to 'e': the first three make the loop exit
 * with code 0 (sd_event_exit), SIGHUP calls log_reopen() and then on_reload (may be NULL). Also
 * turns on sd_event's automatic watchdog pings when WATCHDOG_USEC asks for them. The sources are
 * floating (owned by the loop). */
int daemon_setup_event(sd_event *e, DaemonReloadHandler on_reload, void *userdata);

/* Called on SIGTERM, SIGINT or SIGQUIT by a daemon whose stop has work to do first (relays off, the
 * last events out): it ends the loop itself when done. A second signal comes here again. */
typedef void (*DaemonStopHandler)(void *userdata);

/* daemon_setup_event() for such a daemon: the three stop signals log INFO "Received SIG<x>,
 * stopping." and call on_stop instead of ending the loop. */
int daemon_setup_event_with_stop(sd_event *e, DaemonStopHandler on_stop, DaemonReloadHandler on_reload,
                                 void *userdata);

/* The loop of a kegnet producer whose stop has work to do (kegboard_daemon, rfid_daemon): the default
 * event loop set up by daemon_setup_event_with_stop() (no reload handler) and, on it, a kegnet client
 * to core_addr in producer mode (its outbox kept while the core is away). Logs what fails. */
int daemon_producer_new(const char *core_addr, const KegnetClientCallbacks *callbacks, DaemonStopHandler on_stop,
                        void *userdata, sd_event **ret_event, KegnetClient **ret_kegnet);

/* In a forked child before exec(): unblock every signal and restore default dispositions, since
 * the mask blocked by daemon_setup_event() would otherwise be inherited (a player or a child
 * program that ignores SIGTERM). Async-signal-safe. */
void daemon_reset_signals_for_child(void);
