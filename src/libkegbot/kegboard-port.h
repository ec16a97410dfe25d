/* Which serial ports may be Kegboards: the same rules as udev/70-kegboard.rules
 * (kegboard-serial-protocol.md section 1), for the programs that pick a port themselves when
 * --kegboard_device is empty. A tty is a candidate when udev opted it in (KEGBOT_KEGBOARD=1, any
 * tty: a Raspberry Pi UART too), or when it is a USB serial port (ttyUSB*, ttyACM*) with a known
 * Kegboard vendor/product id. Ports opted in as RFID readers (KEGBOT_RFID=1) never are. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <libudev.h>

#include "device-watch.h"
#include "macro.h"

typedef struct KegboardPortInfo {
        DeviceInfo dev;                 /* no devnode: never a candidate */
        const char *kegbot_kegboard;    /* property KEGBOT_KEGBOARD, NULL if unset */
        const char *kegbot_rfid;        /* property KEGBOT_RFID */
} KegboardPortInfo;

/* Pure: the rules file's decision. */
bool kegboard_port_candidate(const KegboardPortInfo *p);

/* The snapshot of a udev device the decision is made on (strings borrowed from d). */
void kegboard_port_info(struct udev_device *d, KegboardPortInfo *ret);

/* The first candidate tty in udev's enumeration: its node (malloc'ed) and, with ret_device, a
 * reference to it. -ENOENT when there is none; other negative errnos from udev. */
int kegboard_port_find(struct udev *udev, char **ret_devnode, struct udev_device **ret_device);

/* Logs INFO "Kegboard port <node>: <vendor> <model> (vvvv:pppp), serial <s>" (what udev knows). */
void kegboard_port_log_identity(struct udev_device *d);

/* The one-shot choice of the Kegboard tools: 'configured' if non-empty, else the first candidate
 * (its identity logged). None: ERROR "No Kegboard found: ..." and -ENOENT. *ret is malloc'ed. */
int kegboard_port_resolve(const char *configured, char **ret);
