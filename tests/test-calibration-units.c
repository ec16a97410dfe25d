/* The calibration numbers (calibration.md sections 2.4 and 3): round6, the unit helpers, the bounds
 * of the arguments and of a result, and the >30 % warning, with the spec's worked numbers. */

#include <math.h>

#include "calibration-units.h"
#include "test-util.h"

#define check_double(a, b) check(fabs((double) (a) - (double) (b)) < 1e-9)

static void test_round6(void) {
        check_double(calibration_round6(500.0 / 2703), 0.18498);
        check(calibration_round6(500.0 / 2703) == 0.18498);
        check(calibration_round6(1.0 / 0.18498) == 5.40599);
        check(calibration_round6(1.0 / 2.2) == 0.454545);
        check(calibration_round6(0.45) == 0.45);
        check(calibration_round6(1.0 / 0.45) == 2.22222);
        check(calibration_round6(5.0) == 5.0);
        check(isnan(calibration_round6(NAN)));
}

static void test_units(void) {
        /* Section 3's table. */
        check(calibration_round6(calibration_from_pulses_per_gallon(21120)) == 0.179234);
        check(calibration_round6(calibration_from_pulses_per_litre(450)) == 2.22222);
        check_double(calibration_from_ticks_per_ml(2.2), 1.0 / 2.2);
        check_double(calibration_oz_to_ml(1), 29.5735295625);
        check(fabs(calibration_oz_to_ml(16.907) - 500.0) < 0.05);          /* case 12: 500.0 mL */
        check(calibration_round6(calibration_weight_to_ml(510, 1.015)) == 502.463);
        check_double(calibration_weight_to_ml(510, 0), 510);              /* 0 = water */
        check_double(calibration_weight_to_ml(510, 1.0), 510);
        /* Case 11: 2716 ticks for 510 g at 1.015 -> 0.185001 mL/tick. */
        check(calibration_round6(calibration_weight_to_ml(510, 1.015) / 2716) == 0.185001);
        /* And back, for convert. */
        check(calibration_round6(calibration_pulses_per_gallon(calibration_from_pulses_per_gallon(21120))) == 21120);
        check(calibration_round6(calibration_pulses_per_litre(calibration_from_pulses_per_gallon(21120))) == 5579.31);
}

static void test_bounds(void) {
        check(calibration_volume_is_valid(0.001));
        check(calibration_volume_is_valid(100000));
        check(!calibration_volume_is_valid(100000.001));
        check(!calibration_volume_is_valid(0));
        check(!calibration_volume_is_valid(-1));
        check(!calibration_volume_is_valid(NAN));
        check(!calibration_volume_is_valid(INFINITY));

        check(calibration_sg_is_valid(0));
        check(calibration_sg_is_valid(0.9));
        check(calibration_sg_is_valid(1.2));
        check(calibration_sg_is_valid(1.015));
        check(!calibration_sg_is_valid(0.89));
        check(!calibration_sg_is_valid(1015));
        check(!calibration_sg_is_valid(NAN));

        /* Case 14: 200 ticks for 4.0 mL -> 0.02 accepted, 3.999 -> 0.019995 refused; 1000 -> 5, 1000.2 -> 5.001. */
        check(calibration_ml_per_tick_is_valid(calibration_round6(4.0 / 200)));
        check(!calibration_ml_per_tick_is_valid(calibration_round6(3.999 / 200)));
        check(calibration_round6(3.999 / 200) == 0.019995);
        check(calibration_ml_per_tick_is_valid(calibration_round6(1000.0 / 200)));
        check(!calibration_ml_per_tick_is_valid(calibration_round6(1000.2 / 200)));
        check(calibration_round6(1000.2 / 200) == 5.001);
        check(!calibration_ml_per_tick_is_valid(INFINITY));
}

static void test_change(void) {
        /* Case 15: 1000 ticks for 240.5 mL over 0.185 is +30.00 %: no warning; 240.685 mL +30.10 %: one. */
        double at30 = calibration_round6(240.5 / 1000), over = calibration_round6(240.685 / 1000);

        check(!calibration_change_is_large(0.185, at30));
        check(fabs(calibration_change_percent(0.185, at30) - 30.0) < 1e-6);
        check(calibration_change_is_large(0.185, over));
        check(fabs(calibration_change_percent(0.185, over) - 30.1) < 1e-6);
        check(calibration_change_is_large(0.185, 0.1));
        check(!calibration_change_is_large(0.185, 0.18498));
        check(fabs(calibration_change_percent(0.185, 0.18498) + 0.0108108) < 1e-6);
}

int main(void) {
        test_run(test_round6);
        test_run(test_units);
        test_run(test_bounds);
        test_run(test_change);
        return test_result();
}
