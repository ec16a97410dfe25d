/* Flow-meter calibration numbers (calibration.md sections 2.4 and 3): the unit helpers that turn
 * datasheet constants and measured volumes or weights into mL per tick, the rounding every stored
 * and shown value gets, and the bounds and checks of a calibration. Shared by kegbot_core and
 * kegbot_calibrate, so both compute the same numbers. Pure. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

#define CALIBRATION_ML_PER_TICK_MIN 0.02
#define CALIBRATION_ML_PER_TICK_MAX 5.0
#define CALIBRATION_MIN_TICKS 200
#define CALIBRATION_VOLUME_MAX_ML 100000.0      /* a measured volume or weight */
#define CALIBRATION_SG_MIN 0.9
#define CALIBRATION_SG_MAX 1.2
#define CALIBRATION_CHANGE_WARN 0.30            /* a change beyond this is worth a warning */

#define CALIBRATION_ML_PER_US_GALLON 3785.411784
#define CALIBRATION_ML_PER_US_FL_OZ 29.5735295625

/* round6(x): x printed with %.6g and read back, so the value applied, stored and shown is one
 * number (500 / 2703 = 0.184979... -> 0.18498). */
double calibration_round6(double x);

/* mL per tick from ticks per mL, pulses per US gallon, pulses per litre (not rounded). */
double calibration_from_ticks_per_ml(double ticks_per_ml);
double calibration_from_pulses_per_gallon(double pulses);
double calibration_from_pulses_per_litre(double pulses);
/* And back, for showing a value in every unit. */
double calibration_pulses_per_gallon(double ml_per_tick);
double calibration_pulses_per_litre(double ml_per_tick);

/* A volume in US fluid ounces in mL. */
double calibration_oz_to_ml(double oz);
/* A net weight at a specific gravity in mL; a specific gravity of 0 means water (1.000). */
double calibration_weight_to_ml(double grams, double specific_gravity);

/* Arguments (calibration.md section 2.4 step 1): a measured volume or weight finite, > 0 and at most
 * 100 000; a specific gravity 0 or 0.9..1.2; a known ml_per_tick (SetCalibration) finite and within
 * 0.02..5. */
bool calibration_volume_is_valid(double v);
bool calibration_sg_is_valid(double sg);
bool calibration_ml_per_tick_is_valid(double ml_per_tick);

/* (new / old - 1) x 100. */
double calibration_change_percent(double old_ml_per_tick, double new_ml_per_tick);
/* |new / old - 1| > 0.30 by more than 1e-9: applied, with a warning. */
bool calibration_change_is_large(double old_ml_per_tick, double new_ml_per_tick);
