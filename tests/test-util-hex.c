/* Unit tests of the hexadecimal digits (util-hex.h). */
#include "test-util.h"
#include "util-hex.h"

int main(void) {
        char b[16];
        static const unsigned char bytes[] = { 0x04, 0x15, 0xab, 0x23, 0xcd, 0x00, 0xff };

        check(hexchar(0) == '0' && hexchar(9) == '9' && hexchar(10) == 'a' && hexchar(0x1f) == 'f');
        check_int(unhexchar('0'), 0);
        check_int(unhexchar('a'), 10);
        check_int(unhexchar('F'), 15);
        check_int(unhexchar('g'), -EINVAL);
        check_int(unhexchar('\0'), -EINVAL);
        check(hex_is_valid("0415AB23cd", 10));
        check(!hex_is_valid("0415AB23cd", 9));          /* exactly n digits */
        check(!hex_is_valid("0415AB23cx", 10));
        check(!hex_is_valid(NULL, 0));
        check(hex_is_valid("", 0));
        check_streq(hex_encode(bytes, 7, b), "0415ab23cd00ff");
        check_streq(hex_encode(bytes, 0, b), "");
        check(hex_encode(NULL, 1, b) == NULL);
        return test_result();
}
