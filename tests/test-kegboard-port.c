/* Unit test of the Kegboard port rules (the same as udev/70-kegboard.rules): known USB ids on
 * ttyUSB* and ttyACM* only, the KEGBOT_KEGBOARD=1 opt-in on any tty, RFID readers never; and the USB id
 * parsing and identity line of device-watch. */
#include "device-watch.h"
#include "kegboard-port.h"
#include "test-util.h"

static KegboardPortInfo usb_port(const char *sysname, uint16_t vendor, uint16_t product) {
        static char node[64];

        snprintf(node, sizeof(node), "/dev/%s", sysname);
        return (KegboardPortInfo) { .dev = { .subsystem = "tty", .sysname = sysname, .devnode = node,
                                             .has_usb_ids = true, .vendor = vendor, .product = product } };
}

static void test_candidates(void) {
        /* The spec's table: vendor, product (0 = any). */
        static const struct { uint16_t v, p; } known[] = {
                { 0x2341, 0 }, { 0x2a03, 0 }, { 0x0403, 0x6001 }, { 0x0403, 0x6015 }, { 0x1a86, 0x7523 },
                { 0x10c4, 0xea60 }, { 0x067b, 0x2303 }, { 0x16c0, 0x0483 }, { 0x03eb, 0x0436 },
        };
        KegboardPortInfo p;

        for (size_t i = 0; i < ELEMENTSOF(known); i++) {
                uint16_t product = known[i].p ? known[i].p : 0x0043;
                p = usb_port("ttyUSB0", known[i].v, product);
                check(kegboard_port_candidate(&p));
                p = usb_port("ttyACM3", known[i].v, product);
                check(kegboard_port_candidate(&p));
                /* Known ids nominate USB serial names only. */
                p = usb_port("ttyS4", known[i].v, product);
                check(!kegboard_port_candidate(&p));
        }
        p = usb_port("ttyUSB0", 0x0403, 0x6010);
        check(!kegboard_port_candidate(&p));
        p = usb_port("ttyUSB0", 0x1234, 0x5678);
        check(!kegboard_port_candidate(&p));
        p = usb_port("ttyUSBx", 0x2341, 0x0043);
        check(!kegboard_port_candidate(&p));
        p = usb_port("ttyUSB0", 0x2341, 0x0043);
        p.dev.has_usb_ids = false;
        check(!kegboard_port_candidate(&p));

        /* The opt-in works for any tty: a Raspberry Pi UART, a platform port. */
        p = (KegboardPortInfo) { .dev = { .subsystem = "tty", .sysname = "ttyAMA0", .devnode = "/dev/ttyAMA0" },
                                 .kegbot_kegboard = "1" };
        check(kegboard_port_candidate(&p));
        p.dev.sysname = "ttyS4";
        p.dev.devnode = "/dev/ttyS4";
        check(kegboard_port_candidate(&p));
        p.kegbot_kegboard = "0";
        check(!kegboard_port_candidate(&p));
        p.kegbot_kegboard = "1";
        p.dev.devnode = NULL;
        check(!kegboard_port_candidate(&p));

        /* A port opted in as an RFID reader is never probed, even on a Kegboard chip. */
        p = usb_port("ttyUSB0", 0x0403, 0x6015);
        p.kegbot_rfid = "1";
        check(!kegboard_port_candidate(&p));
        p.kegbot_kegboard = "1";
        check(!kegboard_port_candidate(&p));

        p = usb_port("ttyUSB0", 0x2341, 0x0043);
        p.dev.subsystem = "usb-serial";
        check(!kegboard_port_candidate(&p));
}

static void test_usb_ids(void) {
        UsbIdentity id = { .has_ids = true, .vendor = 0x2341, .product = 0x0043, .manufacturer = "Arduino LLC",
                           .model = "Uno\x1b[31m", .serial = "7523" };
        char buf[256];
        uint16_t v;

        check(parse_usb_id("06c2", &v) == 0 && v == 0x06c2);
        check(parse_usb_id("6C2", &v) == 0 && v == 0x06c2);
        check(parse_usb_id("", &v) == -EINVAL);
        check(parse_usb_id("06c2x", &v) == -EINVAL);
        check(parse_usb_id("0x06", &v) == -EINVAL);
        check(parse_usb_id(NULL, &v) == -EINVAL);

        /* Untrusted strings are escaped. */
        check_streq(usb_identity_format(&id, buf, sizeof(buf)), "Arduino LLC Uno\\x1b[31m (2341:0043), serial 7523");
        id = (UsbIdentity) { .has_ids = true, .vendor = 0x0403, .product = 0x6015 };
        check_streq(usb_identity_format(&id, buf, sizeof(buf)), "(0403:6015)");
        id = (UsbIdentity) {};
        check_streq(usb_identity_format(&id, buf, sizeof(buf)), "");
        check(device_action_from_string("add") == DEVICE_ADD);
        check(device_action_from_string("change") == DEVICE_CHANGE);
        check(device_action_from_string("remove") == DEVICE_REMOVE);
        check(device_action_from_string("bind") == DEVICE_OTHER);
        check(device_action_from_string(NULL) == DEVICE_OTHER);
}

int main(void) {
        test_run(test_candidates);
        test_run(test_usb_ids);
        return test_result();
}
