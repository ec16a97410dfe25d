/* Calibration numbers: see calibration-units.h. Only builtins of math.h (isfinite): the core does
 * not map libm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "calibration-units.h"

#define CHANGE_EPSILON 1e-9

double calibration_round6(double x) {
        char buf[32];

        if (!isfinite(x))
                return x;
        snprintf(buf, sizeof buf, "%.6g", x);
        return strtod(buf, NULL);
}

double calibration_from_ticks_per_ml(double ticks_per_ml) {
        return 1.0 / ticks_per_ml;
}

double calibration_from_pulses_per_gallon(double pulses) {
        return CALIBRATION_ML_PER_US_GALLON / pulses;
}

double calibration_from_pulses_per_litre(double pulses) {
        return 1000.0 / pulses;
}

double calibration_pulses_per_gallon(double ml_per_tick) {
        return CALIBRATION_ML_PER_US_GALLON / ml_per_tick;
}

double calibration_pulses_per_litre(double ml_per_tick) {
        return 1000.0 / ml_per_tick;
}

double calibration_oz_to_ml(double oz) {
        return oz * CALIBRATION_ML_PER_US_FL_OZ;
}

double calibration_weight_to_ml(double grams, double specific_gravity) {
        return grams / (specific_gravity == 0 ? 1.0 : specific_gravity);
}

bool calibration_volume_is_valid(double v) {
        return isfinite(v) && v > 0 && v <= CALIBRATION_VOLUME_MAX_ML;
}

bool calibration_sg_is_valid(double sg) {
        return sg == 0 || (isfinite(sg) && sg >= CALIBRATION_SG_MIN && sg <= CALIBRATION_SG_MAX);
}

bool calibration_ml_per_tick_is_valid(double ml_per_tick) {
        return isfinite(ml_per_tick) && ml_per_tick >= CALIBRATION_ML_PER_TICK_MIN &&
               ml_per_tick <= CALIBRATION_ML_PER_TICK_MAX;
}

double calibration_change_percent(double old_ml_per_tick, double new_ml_per_tick) {
        return (new_ml_per_tick / old_ml_per_tick - 1.0) * 100.0;
}

bool calibration_change_is_large(double old_ml_per_tick, double new_ml_per_tick) {
        double change = new_ml_per_tick / old_ml_per_tick - 1.0;

        if (change < 0)
                change = -change;
        return change - CALIBRATION_CHANGE_WARN > CHANGE_EPSILON;
}
