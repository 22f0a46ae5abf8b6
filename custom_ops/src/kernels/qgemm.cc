// Integer Gemm: the weight rows are the N outputs, the columns the M activation rows, quantized into u8 quads
// [k/4][M (padded to 16)][4] so that the conv kernels apply unchanged.
#include "kernels/qgemm.h"

#include <algorithm>
#include <vector>

namespace inq {

std::string QGemmWeights::prepare(int64_t k, int64_t n, bool trans_b, const int16_t* levels, const float* unit,
                                  float alpha, const QKernels* kern) {
  if (k <= 0 || n <= 0) return "integer gemm: bad weight shape";
  k_ = k, n_ = n;
  std::vector<int16_t> rows(static_cast<size_t>(n * k));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < k; ++d)
      rows[static_cast<size_t>(j * k + d)] = trans_b ? levels[j * k + d] : levels[d * n + j];
  std::vector<float> u(unit, unit + n);
  for (auto& v : u) v *= alpha;
  return packed_.pack(kern ? *kern : active_qkernels(), 1, n, k, rows.data(), u.data());
}

void qgemm_forward(const QGemmWeights& w, int64_t m, bool trans_a, const float* a, QuantParams aq,
                   const Epilogue& ep, float* y, const TaskRunner& runner) {
  const QPackedWeights& pw = w.packed();
  const QKernels& kern = pw.kernels();
  const int64_t K = w.k(), N = w.n(), kqn = pw.kqn();
  const int64_t mpad = (m + kQCols - 1) / kQCols * kQCols;
  const QuantParams p = aq.dynamic() ? dynamic_params(kern, a, m * K, runner) : aq;
  ScratchPool::Lease buf = pw.pool().acquire(static_cast<size_t>(kqn * mpad * 4));
  uint32_t* act = buf.as<uint32_t>();
  const uint32_t zq = static_cast<uint32_t>(p.zero_point) * 0x01010101u;
  std::vector<int64_t> off(static_cast<size_t>(kqn));
  for (int64_t kq = 0; kq < kqn; ++kq) off[static_cast<size_t>(kq)] = kq * mpad * 4;

  if (trans_a) {  // a is (K x M): four depth rows make one quad row
    runner.run(static_cast<size_t>(kqn), [&](size_t t) {
      const int64_t kq = static_cast<int64_t>(t);
      const float* src[4];
      for (int64_t i = 0; i < 4; ++i) src[i] = 4 * kq + i < K ? a + (4 * kq + i) * m : nullptr;
      kern.quantize4(src, m, p.scale, p.zero_point, act + kq * mpad);
      std::fill(act + kq * mpad + m, act + (kq + 1) * mpad, zq);
    });
  } else {  // a is (M x K): quantize each row, then scatter its bytes into the quads
    std::fill(act, act + kqn * mpad, zq);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(act);
    runner.run(static_cast<size_t>(m), [&](size_t t) {
      const int64_t i = static_cast<int64_t>(t);
      std::vector<uint32_t> tmp(static_cast<size_t>(K));
      const float* src[4] = {a + i * K, nullptr, nullptr, nullptr};
      kern.quantize4(src, K, p.scale, p.zero_point, tmp.data());
      const uint8_t* q = reinterpret_cast<const uint8_t*>(tmp.data());  // byte 0 of each quad
      for (int64_t d = 0; d < K; ++d) bytes[((d / 4) * mpad + i) * 4 + d % 4] = q[4 * d];
    });
  }

  const int64_t blocks = pw.blocks_per_group();
  const int64_t nc = std::min<int64_t>(mpad, 128), cbn = (mpad + nc - 1) / nc;
  const float lo = ep.lower(), hi = ep.upper();
  runner.run(static_cast<size_t>(blocks * cbn), [&](size_t t) {
    const int64_t bi = static_cast<int64_t>(t) / cbn, cb = static_cast<int64_t>(t) % cbn;
    const QBlock& b = pw.block(0, bi);
    const int64_t c0 = cb * nc, cn = std::min(nc, mpad - c0), cend = std::min(c0 + cn, m);
    ScratchPool::Lease accl = pw.pool().acquire(static_cast<size_t>(b.panels * kQMR * cn) * sizeof(int32_t));
    int32_t* acc = accl.as<int32_t>();
    pw.run_block(b, reinterpret_cast<const uint8_t*>(act) + 4 * c0, off.data(), cn, acc);
    // y is (M x N): the outputs of one weight row are strided, so rescale element by element.
    for (int64_t r = 0; r < b.rows; ++r) {
      const int64_t j = b.row0 + r;
      QRowEpilogue e{p.zero_point * pw.rowsum(j), pw.negated(j), pw.unit(j) * p.scale, ep.bias ? ep.bias[j] : 0.0f,
                     ep.bias != nullptr, nullptr, lo, hi};
      for (int64_t i = c0; i < cend; ++i) {
        e.summand = ep.summand ? ep.summand + i * N + j : nullptr;
        kern.epilogue(e, acc + r * cn + (i - c0), 1, y + i * N + j);
      }
    }
  });
}

}  // namespace inq
