/* fastloss vector math: exp, expm1, log, log1p for float and double.
 *
 * Placeholder: libm wrappers. To be replaced by branch-free polynomial
 * versions that GCC vectorises (no -ffast-math; NaN/Inf preserved).
 */
#ifndef FASTLOSS_VMATH_H
#define FASTLOSS_VMATH_H
#include <math.h>

static inline float fl_expf(float x) { return expf(x); }
static inline double fl_exp(double x) { return exp(x); }
static inline float fl_logf(float x) { return logf(x); }
static inline double fl_log(double x) { return log(x); }
static inline float fl_expm1f(float x) { return expm1f(x); }
static inline double fl_expm1(double x) { return expm1(x); }
static inline float fl_log1pf(float x) { return log1pf(x); }
static inline double fl_log1p(double x) { return log1p(x); }

#endif
