"""Write native/elementwise_losses.h from the loss table (fastloss/_elementwise_spec.py).

Run by ``setup.py`` before Cython (or by hand: ``python fastloss/native/elementwise_codegen.py``).
For every loss of the table the header gets

* ``fl_ew_<name>_f`` / ``_d``: its body as an always-inlined C function of
  ``(p, t, <options by name>, T *g, T *h)``, once for float and once for double;
  with a ``prepass`` (see the table), also ``fl_ew_<name>_pre_T(p[, tame])``;
* ``fl_ew_loop_<name>_f`` / ``_d``: the loop over n elements into the loss,
  gradient (and, only when ``hb`` is not NULL, hessian) buffers. The loop
  without hessians passes a dead scratch variable as ``h``: the compiler drops
  that arithmetic, so the loss/gradient loop is the one it always was. A loss
  with tame, a prepass or prefetch runs chunks of FL_EW_CHUNK elements: the
  prefetch of the inputs FL_EW_AHEAD_BYTES on (up to the caller's ``ahead``),
  the tame scan of the chunk, the prepass value of each element into a stack
  buffer, then the body over it (with both, the scan runs inside the tame
  prepass's loop, and a chunk found not tame runs the guarded prepass after);
* ``fl_ew_store_<name>_f`` / ``_d``: the loop writing ``gscale * g`` straight to
  the gradient (used for the losses marked ``fused_grad_store``, and for every
  loss when the caller asks with ``fuse``: the 16-bit kernels, whose gradient
  goes to a float32 buffer in cache anyway);

* ``fl_ew_bf16_<name>_f`` (the losses without exp/log, on levels with
  FL_EW_BF16_PAIRS, native/elementwise_bf16.h): the one-pass loop for bfloat16
  prediction, target and gradient and nothing else: it reads two elements per
  32-bit word, writes the rounded gradient and adds the losses into the block
  sum's lanes in the float32 kernel's order;

and one dispatch ``fl_ew_losses_f`` / ``_d`` on the kind number (the loss's
position in the table), one ``fl_ew_bf16_f`` for the bfloat16 loops, the kind
names, option names and transcendental flags that ``native/elementwise.pxi``
reads. Nothing here knows a particular loss.
"""
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(os.path.dirname(HERE), "_elementwise_spec.py")
HEADER = os.path.join(HERE, "elementwise_losses.h")
TYPES = (("float", "f"), ("double", "d"))


def load_spec(path=SPEC_PATH):
    """The table module, loaded by file path (the package need not be importable)."""
    spec = importlib.util.spec_from_file_location("_fastloss_elementwise_spec", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _instantiate(text, ctype, suffix):
    """T -> ctype, fl_<name>_T -> fl_<name>_<suffix>."""
    text = re.sub(r"(\w)_T\b", r"\1_" + suffix, text)
    return re.sub(r"\bT\b", ctype, text)


def _body(loss, ctype, suffix):
    params = "".join(f"T {name}, " for name in loss.params)
    tame = "int tame" if loss.tame is not None else ""
    if tame:
        params += tame + ", "
    pre = ""
    if loss.prepass is not None:   # its own function, run by the loops' first pass
        name, expr = loss.prepass
        params += f"T {name}, "
        pre = (f"FL_INLINE T fl_ew_{loss.name}_pre_T(T p{', ' + tame if tame else ''})\n"
               f"{{\n    {tame and '(void)tame;  '}return {expr.strip()};\n}}\n")
    if loss.scaled_grad:
        params += "T gscale, "
    lines = [line.strip() for line in loss.native.strip().splitlines()]
    return _instantiate(
        pre + f"FL_INLINE T fl_ew_{loss.name}_T(T p, T t, {params}T *g, T *h)\n{{\n"
        + "".join(f"    {line}\n" for line in lines) + "}\n", ctype, suffix)


def _loop(loss, ctype, suffix, store):
    """The element loop; ``store``: the variant writing gscale * g straight to grad."""
    per_elem = [o.name for o in loss.options if o.per_element]
    assert len(per_elem) <= 1, f"{loss.name}: the kernel has one per-element option slot"
    out = "T *grad, T gscale" if store else "T *gb, T *hb"
    head = (f"{'FL_EW_OUTLINE' if loss.transcendental else 'FL_INLINE'} void "
            f"fl_ew_{'store' if store else 'loop'}_{loss.name}_T(const T *p, const T *t, "
            f"const T *aux, const double *par, T *lb, {out}, Py_ssize_t n, Py_ssize_t ahead)\n{{\n"
            f"    Py_ssize_t i;  T {'gs, ' if store else ''}hs;  (void)aux; (void)par; (void)ahead;\n")
    for k, name in enumerate(loss.params):
        head += f"    const T {name}_s = (T)par[{k}];\n"
    pre = loss.prepass is not None
    # with a prepass, tame or prefetch: chunks of FL_EW_CHUNK elements, [i0, i1)
    chunked = pre or loss.tame is not None or loss.prefetch
    if chunked:
        head += "    Py_ssize_t i0, i1;\n"
    if pre:
        head += "    T pre_b[FL_EW_CHUNK];\n"
    span = "i = i0; i < i1; i++" if chunked else "i = 0; i < n; i++"

    # options whose default the loops pass as a literal when the call's value is it
    folds = [o for o in loss.options if o.fold_default]
    assert len(folds) <= 1, f"{loss.name}: one fold_default option at most"

    def call(sources, g, h, tame):
        args = "".join(f"{sources.get(n, n + '_s')}, " for n in loss.params)
        if tame is not None:
            args += f"{tame}, "
        if pre:
            args += "pre_b[i - i0], "
        if loss.scaled_grad:   # the store loop's scale; the buffers get g itself
            args += "gscale, " if store else "(T)1, "
        return f"fl_ew_{loss.name}_T(p[i], t[i], {args}{g}, {h})"

    def loops(sources, indent, tame):
        pad = " " * indent
        if store:
            scale = "" if loss.scaled_grad else " * gscale"
            return (f"{pad}for ({span}) {{\n"
                    f"{pad}    lb[i] = {call(sources, '&gs', '&hs', tame)};\n"
                    f"{pad}    grad[i] = gs{scale};\n{pad}}}\n")
        return (f"{pad}if (hb == NULL)  /* loss and gradient: hs is dead, h not computed */\n"
                f"{pad}    for ({span}) lb[i] = {call(sources, '&gb[i]', '&hs', tame)};\n"
                f"{pad}else\n"
                f"{pad}    for ({span}) lb[i] = {call(sources, '&gb[i]', '&hb[i]', tame)};\n")

    def scalar_loops(sources, indent, tame):
        """loops(), and for a fold_default option at its default, a copy with the literal."""
        if not folds:
            return loops(sources, indent, tame)
        pad, o = " " * indent, folds[0]
        lit = f"(T){o.default!r}"
        return (f"{pad}if ({o.name}_s == {lit}) {{  /* the default, folded */\n"
                + loops({**sources, o.name: lit}, indent + 4, tame)
                + f"{pad}}} else {{\n" + loops(sources, indent + 4, tame) + f"{pad}}}\n")

    def all_loops(indent, tame, prepass=True):
        pad = " " * indent
        if per_elem:
            inner = (f"{pad}if (aux != NULL) {{\n" + loops({per_elem[0]: "aux[i]"}, indent + 4, tame)
                     + f"{pad}}} else {{\n" + scalar_loops({}, indent + 4, tame)
                     + f"{pad}}}\n")
        else:
            inner = scalar_loops({}, indent, tame)
        if not (pre and prepass):
            return inner
        # first pass: the prepass value of the chunk into pre_b; then the body over it
        targ = "" if tame is None else f", {tame}"
        return (f"{pad}for ({span}) pre_b[i - i0] = fl_ew_{loss.name}_pre_T(p[i]{targ});\n"
                + inner)

    if not chunked:
        body = all_loops(4, None)
    else:
        body = ("    for (i0 = 0; i0 < n; i0 = i1) {\n"
                "        i1 = n - i0 < FL_EW_CHUNK ? n : i0 + FL_EW_CHUNK;\n"
                + ("        fl_ew_ahead_T(p, t, aux, i0, i1, ahead);\n" if loss.prefetch else ""))
        if loss.tame is None:
            body += all_loops(8, None)
        elif pre:   # the scan inside the tame prepass's loop (see elementwise_math.h)
            body += (
                "        {\n"
                "            uint32_t m = 0;\n"
                "            int tame = 0;\n"
                "            if (FL_EW_TAME_PASS_T) {\n"
                "                for (i = i0; i < i1; i++) {\n"
                f"                    pre_b[i - i0] = fl_ew_{loss.name}_pre_T(p[i], 1);\n"
                "                    m = fl_ew_mag_T(p[i]) > m ? fl_ew_mag_T(p[i]) : m;\n"
                "                }\n"
                f"                tame = m <= fl_ew_mag_bound_T((T){loss.tame!r});\n"
                "            }\n"
                "            if (tame) {\n" + all_loops(16, 1, prepass=False)
                + "            } else {   /* some |p| > bound, or NaN: the guarded prepass */\n"
                + all_loops(16, 0) + "            }\n"
                "        }\n")
        else:   # the chunk's |p| all <= loss.tame: the body with its cheaper kernels
            body += (f"        if (fl_ew_tame_T(p + i0, i1 - i0, (T){loss.tame!r})) {{\n"
                     + all_loops(12, 1) + "        } else {\n" + all_loops(12, 0)
                     + "        }\n")
        body += "    }\n"
    return _instantiate(head + body + "}\n", ctype, suffix)


def _bf16_loop(loss):
    """The one-pass bfloat16 loop (float only): n a multiple of FL_EW_BF16_CHUNK."""
    def call(half):
        args = "".join(f"{n}_s, " for n in loss.params)
        return (f"fl_ew_{loss.name}_f(fl_bf16x2_{half}(a), fl_bf16x2_{half}(b), {args}"
                f"&g{half}, &hs)")

    def step(first):
        # fl_ew_unfused: the lane add stays an add (see elementwise_bf16.h)
        op, k = ("=", "0") if first else ("+=", "k")
        loop = "        for (j = 0; j < 8; j++) {\n" if first else (
            "        for (k = 1; k < 8; k++)\n        for (j = 0; j < 8; j++) {\n")
        return (loop
                + f"            const Py_ssize_t w = c + 8 * {k} + j;\n"
                "            const uint32_t a = pw[w], b = tw[w];\n"
                "            float glo, ghi;\n"
                f"            const float llo = {call('lo')};\n"
                f"            const float lhi = {call('hi')};\n"
                "            gw[w] = fl_bf16x2_round(glo * gscale, ghi * gscale);\n"
                f"            le[j] {op} fl_ew_unfused(llo, zero);\n"
                f"            lo[j] {op} fl_ew_unfused(lhi, zero);\n"
                "        }\n")

    head = ("FL_INLINE void "
            f"fl_ew_bf16_{loss.name}_f(const uint16_t *FL_RESTRICT p, "
            "const uint16_t *FL_RESTRICT t, const double *FL_RESTRICT par, "
            "uint16_t *FL_RESTRICT grad, float gscale, Py_ssize_t n, double *FL_RESTRICT acc)\n{\n"
            "    const fl_bf16x2 *pw = (const fl_bf16x2 *)p, *tw = (const fl_bf16x2 *)t;\n"
            "    fl_bf16x2 *gw = (fl_bf16x2 *)grad;\n"
            "    const uint32_t zero = fl_ew_opaque_zero;\n"
            "    Py_ssize_t c;  int j, k;  float hs;  double lacc[16];  (void)par;\n")
    for k, name in enumerate(loss.params):
        head += f"    const float {name}_s = (float)par[{k}];\n"
    return (head + "    for (j = 0; j < 16; j++) lacc[j] = acc[j];\n"
            "    for (c = 0; c < n / 2; c += FL_EW_BF16_CHUNK / 2) {  /* words */\n"
            "        float le[8], lo[8];  /* lanes 2j and 2j + 1 */\n"
            + step(True) + step(False)
            + "        for (j = 0; j < 8; j++) {\n"
            "            lacc[2 * j] += le[j];\n            lacc[2 * j + 1] += lo[j];\n        }\n"
            "    }\n    for (j = 0; j < 16; j++) acc[j] = lacc[j];\n}\n")


def _bf16_dispatch(losses):
    text = ("/* The first n - n % FL_EW_BF16_CHUNK elements of loss `kind` on bfloat16 p, t\n"
            " * and gradient (scaled by gscale), their losses added into the 16 lanes of\n"
            " * acc in the float32 kernel's order. Returns how many elements it did (0 on\n"
            " * levels without FL_EW_BF16_PAIRS, and for the losses with exp/log). */\n"
            "FL_INLINE Py_ssize_t fl_ew_bf16_f(int kind, const uint16_t *p, const uint16_t *t,\n"
            "                                  const double *par, uint16_t *grad, float gscale,\n"
            "                                  Py_ssize_t n, double *acc)\n{\n"
            "#ifdef FL_EW_BF16_PAIRS\n"
            "    Py_ssize_t m = n - n % FL_EW_BF16_CHUNK;\n"
            "    if (m == 0) return 0;\n"
            "    switch (kind) {\n")
    for loss in losses:
        text += (f"    case FL_EW_{loss.name.upper()}:\n"
                 f"        fl_ew_bf16_{loss.name}_f(p, t, par, grad, gscale, m, acc);\n"
                 f"        return m;\n")
    return (text + "    }\n#endif\n"
            "    (void)kind; (void)p; (void)t; (void)par; (void)grad; (void)gscale; (void)n;\n"
            "    (void)acc;\n"
            "    return 0;\n}\n")


def _dispatch(losses, ctype, suffix):
    text = ("/* Losses and gradients (hessians too when hb != NULL) of n elements of loss `kind`\n"
            " * into lb, gb (hb). A compute-bound loss (or any loss when `fuse`) given grad\n"
            " * (only when there are no weights, upstream gradient or hessians) writes\n"
            " * gscale * g there instead of gb and returns 1: its stores then overlap its\n"
            " * arithmetic. ahead: the losses marked prefetch prefetch p, t and aux up to\n"
            " * element `ahead` (fl_ew_ahead_T; 0: nothing). */\n"
            "FL_INLINE int fl_ew_losses_T(int kind, const T *p, const T *t, const T *aux,\n"
            "                             const double *par, T *lb, T *gb, T *hb, T *grad,\n"
            "                             T gscale, Py_ssize_t n, Py_ssize_t ahead, int fuse)\n{\n"
            "    switch (kind) {\n")
    for loss in losses:
        text += f"    case FL_EW_{loss.name.upper()}:\n"
        fuse = "" if loss.fused_grad_store else " && fuse"
        text += (f"        if (grad != NULL && hb == NULL{fuse}) {{\n"
                 f"            fl_ew_store_{loss.name}_T(p, t, aux, par, lb, grad, gscale, n, ahead);\n"
                 f"            return 1;\n        }}\n")
        text += (f"        fl_ew_loop_{loss.name}_T(p, t, aux, par, lb, gb, hb, n, ahead);\n"
                 "        return 0;\n")
    text += "    }\n    (void)grad; (void)gscale; (void)ahead; (void)fuse;\n    return 0;\n}\n"
    return _instantiate(text, ctype, suffix)


def header(losses):
    """The C text of elementwise_losses.h for ``losses`` (the table, in order)."""
    def c_str(s):
        return '"' + s + '"'
    parts = [
        "/* GENERATED from fastloss/_elementwise_spec.py by fastloss/native/elementwise_codegen.py\n"
        " * at build time: do not edit (edit the table and rebuild). */\n"
        "#ifndef FASTLOSS_ELEMENTWISE_LOSSES_H\n#define FASTLOSS_ELEMENTWISE_LOSSES_H\n\n"
        '#include "elementwise_math.h"\n#include "elementwise_bf16.h"\n\n',
        "enum {\n" + "".join(f"    FL_EW_{l.name.upper()} = {k},\n" for k, l in enumerate(losses))
        + f"    FL_EW_COUNT = {len(losses)},\n"
        + f"    FL_EW_MAX_PARAMS = {max(len(l.params) for l in losses)}\n}};\n\n",
        "static const char *const fl_ew_names[] = {"
        + ", ".join(c_str(l.name) for l in losses) + "};\n",
        "/* the options each body receives, space-separated, in the order of par[] */\n"
        "static const char *const fl_ew_params[] = {"
        + ", ".join(c_str(" ".join(l.params)) for l in losses) + "};\n",
        "/* exp/log losses: parallel from fewer elements, no sub-blocks */\n"
        "static const int fl_ew_transcendental[] = {"
        + ", ".join(str(int(l.transcendental)) for l in losses) + "};\n\n",
        "/* elements per chunk of the loops of a loss with tame or a prepass (see the\n"
        " * table): each chunk is scanned for tame on its own, its prepass values go to a\n"
        " * stack buffer of this many (256 and 512 measured alike, 128 and 1024 slower) */\n"
        "#define FL_EW_CHUNK 256\n\n",
    ]
    for ctype, suffix in TYPES:
        parts.append(f"/* ---- {ctype} ---- */\n\n")
        for loss in losses:
            parts.append(f"/* {loss.name} */\n" + _body(loss, ctype, suffix))
            parts.append(_loop(loss, ctype, suffix, store=False))
            parts.append(_loop(loss, ctype, suffix, store=True))
            parts.append("\n")
        parts.append(_dispatch(losses, ctype, suffix) + "\n")
    parts.append("/* ---- bfloat16, one pass ---- */\n\n#ifdef FL_EW_BF16_PAIRS\n")
    # the cheap losses only: a transcendental body twice per iteration (even and
    # odd lanes) runs out of vector registers; those keep the tiles (measured)
    cheap = [loss for loss in losses if not loss.transcendental]
    parts.extend(f"/* {loss.name} */\n" + _bf16_loop(loss) + "\n" for loss in cheap)
    parts.append("#endif\n\n" + _bf16_dispatch(cheap) + "\n")
    parts.append("#endif\n")
    return "".join(parts)


def write(path=HEADER):
    """(Re)write the header when its text changed; return its path."""
    text = header(load_spec().LOSSES)
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if old != text:
        with open(path, "w") as f:
            f.write(text)
    return path


if __name__ == "__main__":
    print(write())
