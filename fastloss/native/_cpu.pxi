# What a level module was built with, and what the running CPU can execute
# (included by _kernels.pyx; every level module has both, and fastloss/_backend.py
# asks the baseline module which level modules the CPU may import).
#
# Levels (x86-64, GCC / Clang): "avx2" = x86-64-v3 (AVX2, FMA, BMI1/2, F16C,
# LZCNT, MOVBE), "avx512" = x86-64-v4 (v3 + AVX-512 F/BW/CD/DQ/VL). The checks
# go through the compiler's __builtin_cpu_supports, which also asks the OS
# whether it saves the vector registers (XGETBV). Other compilers and
# architectures: "baseline" only.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FL_HAVE_OPENMP 1
    #else
    #define FL_HAVE_OPENMP 0
    #endif
    #if defined(__AVX512F__)
    #define FL_SIMD "avx512"
    #elif defined(__AVX2__) && defined(__FMA__)
    #define FL_SIMD "avx2+fma"
    #elif defined(__AVX2__)
    #define FL_SIMD "avx2"
    #elif defined(__AVX__)
    #define FL_SIMD "avx"
    #elif defined(__SSE4_2__)
    #define FL_SIMD "sse4.2"
    #elif defined(__SSE2__)
    #define FL_SIMD "sse2"
    #elif defined(__ARM_NEON)
    #define FL_SIMD "neon"
    #else
    #define FL_SIMD "none"
    #endif
    #if defined(__VERSION__)
    #define FL_COMPILER __VERSION__
    #else
    #define FL_COMPILER "unknown"
    #endif

    /* bit 0: the CPU runs the avx2 level, bit 1: the avx512 level */
    static int fl_cpu_levels(void)
    {
    #if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
        int v3, v4;
        __builtin_cpu_init();
    #if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
        v3 = __builtin_cpu_supports("x86-64-v3") != 0;
        v4 = __builtin_cpu_supports("x86-64-v4") != 0;
    #else
        v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
             && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
        v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
             && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
             && __builtin_cpu_supports("avx512vl");
    #endif
        return (v3 ? 1 : 0) | (v3 && v4 ? 2 : 0);
    #else
        return 0;
    #endif
    }
    """
    int FL_HAVE_OPENMP
    const char* FL_SIMD
    const char* FL_COMPILER
    int fl_cpu_levels()


def build_info():
    """What this build of the extension was compiled with."""
    return {
        "openmp": bool(FL_HAVE_OPENMP),
        "simd": FL_SIMD.decode("ascii"),
        "compiler": FL_COMPILER.decode("ascii", "replace"),
    }


def cpu_levels():
    """The instruction-set levels the running CPU (and OS) can execute, lowest first."""
    cdef int bits = fl_cpu_levels()
    return ("baseline",) + (("avx2",) if bits & 1 else ()) + (("avx512",) if bits & 2 else ())
