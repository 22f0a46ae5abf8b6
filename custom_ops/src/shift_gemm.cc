// ShiftGemm kernel: Y = alpha * A' * decode(B_packed)' + beta * C: a code GEMV for a few rows of A, else a
// blocked GEMM with tasks over (M block, N block).
#include "shift_gemm.h"

#include <algorithm>

#include "kernels/packed_weights.h"
#include "kernels/scratch.h"

namespace inq {

OpSpec ShiftGemm::spec() {
  return kernel_op_spec<ShiftGemm>({ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
                                   {false, false, true});
}

std::string ShiftGemm::prefix() const {
  if (matmul_) return "ShiftMatMul (weight_shape " + shape_str(weight_.shape) + "): ";
  return "ShiftGemm (weight_shape " + shape_str(weight_.shape) + ", transA " + std::to_string(trans_a_) +
         ", transB " + std::to_string(trans_b_) + "): ";
}

Status ShiftGemm::init(const OrtKernelInfo* info) {
  const std::string name = matmul_ ? "ShiftMatMul" : kName;
  if (!matmul_) {
    bool present = false;
    int64_t flag = 0;
    INQ_RETURN_IF_ERROR(with_prefix("ShiftGemm: ", attr_int(api_, info, "transA", &flag, &present)));
    trans_a_ = present && flag != 0;
    INQ_RETURN_IF_ERROR(with_prefix("ShiftGemm: ", attr_int(api_, info, "transB", &flag, &present)));
    trans_b_ = present && flag != 0;
    INQ_RETURN_IF_ERROR(with_prefix("ShiftGemm: ", attr_float(api_, info, "alpha", &alpha_, &present)));
    if (!present) alpha_ = 1.0f;
    INQ_RETURN_IF_ERROR(with_prefix("ShiftGemm: ", attr_float(api_, info, "beta", &beta_, &present)));
    if (!present) beta_ = 1.0f;
  }

  INQ_RETURN_IF_ERROR(read_activation(api_, info, name + ": ", &fused_));
  INQ_RETURN_IF_ERROR(read_packed_shape(api_, info, name, {2}, &weight_));
  k_ = trans_b_ ? weight_.shape[1] : weight_.shape[0];
  n_ = trans_b_ ? weight_.shape[0] : weight_.shape[1];
  weight_.channel_axis = trans_b_ ? 0 : 1;  // the N axis
  INQ_RETURN_IF_ERROR(read_exponent_base(api_, info, prefix(), n_, "N", &weight_));

  INQ_RETURN_IF_ERROR(read_integer_mode(api_, info, prefix(), &integer_, &x_quant_));

  TensorRef packed;
  INQ_RETURN_IF_ERROR(constant_input(api_, info, 1, &packed));
  if (packed.present) {
    auto b = std::make_unique<GemmWeights>();
    INQ_RETURN_IF_ERROR(prepare(packed, b.get()));
    constant_b_ = std::move(b);
  }
  return Status();
}

Status ShiftGemm::prepare(const TensorRef& packed, GemmWeights* out) const {
  INQ_RETURN_IF_ERROR(check_packed_input(packed, weight_, prefix(), "B_packed"));
  const auto* bytes = static_cast<const uint8_t*>(packed.data);
  out->codes.assign(bytes, bytes + packed.count);
  CodeWeights codes;
  codes.packed = out->codes.data();
  codes.packed_bytes = static_cast<int64_t>(out->codes.size());
  codes.bits = weight_.bits;
  codes.k = k_, codes.n = n_, codes.trans = trans_b_;
  codes.exponent_base = weight_.exponent_base;
  // The GEMV refuses only what it cannot hold exactly (integer levels beyond 8 powers of two, say); then the
  // blocked GEMM takes every batch size, and is packed now so that its own errors surface at load.
  out->gemv = (integer_ ? out->gemv_int.prepare(codes) : out->gemv_float.prepare(codes)).empty();
  return out->gemv ? Status() : blocked_operand(*out);
}

Status ShiftGemm::blocked_operand(const GemmWeights& w) const {
  std::call_once(w.packed_once, [&] {
    const std::string where = prefix() + "B_packed";
    const int64_t count = element_count(weight_.shape);
    if (integer_) {
      TemporaryArray<int16_t> levels(static_cast<size_t>(count));
      std::vector<float> unit;
      std::string err = decode_levels(w.codes.data(), static_cast<int64_t>(w.codes.size()), weight_.bits,
                                      weight_.shape, weight_.exponent_base, weight_.channel_axis, levels.data(), &unit);
      if (err.empty()) {
        if (unit.size() == 1) unit.assign(static_cast<size_t>(n_), unit[0]);
        err = w.levels.prepare(k_, n_, trans_b_, levels.data(), unit.data(), alpha_);
      }
      if (!err.empty()) w.packed_status = Status::Invalid(where + ": " + err);
      return;
    }
    TemporaryArray<float> dense(static_cast<size_t>(count));
    const std::string err = decode_weights(w.codes.data(), static_cast<int64_t>(w.codes.size()), weight_.bits,
                                           weight_.shape, weight_.exponent_base, weight_.channel_axis, dense.data());
    if (!err.empty()) {
      w.packed_status = Status::Invalid(where + ": " + err);
      return;
    }
    // B operand: rows n, depth k.
    if (trans_b_) w.panels.pack(dense.data(), k_, 1, n_, k_, active_kernel().nr);
    else w.panels.pack(dense.data(), 1, n_, n_, k_, active_kernel().nr);
  });
  return w.packed_status;
}

void ShiftGemm::c_epilogue(const TensorRef& c, int64_t m, int64_t c_rows, int64_t c_cols,
                           std::vector<float>* storage, Epilogue* ep) const {
  if (!c.present || beta_ == 0.0f) return;
  const float* cd = static_cast<const float*>(c.data);
  if (c_rows == 1 && c_cols == n_) {  // one value per column: the bias
    storage->assign(cd, cd + n_);
    for (float& v : *storage) v *= beta_;
    ep->bias = storage->data();
    return;
  }
  storage->resize(static_cast<size_t>(m * n_));  // any other broadcast, expanded
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n_; ++j)
      (*storage)[i * n_ + j] = beta_ * cd[(c_rows == 1 ? 0 : i * c_cols) + (c_cols == 1 ? 0 : j)];
  ep->summand = storage->data();
}

Status ShiftGemm::compute(OrtKernelContext* ctx) const {
  TensorRef a, c;
  INQ_RETURN_IF_ERROR(input(api_, ctx, 0, &a));
  INQ_RETURN_IF_ERROR(input(api_, ctx, 2, &c));
  if (!a.present || a.shape.size() != 2)
    return Status::Invalid(prefix() + "A must have rank 2, got shape " + shape_str(a.shape));
  const int64_t m = trans_a_ ? a.shape[1] : a.shape[0];
  const int64_t ka = trans_a_ ? a.shape[0] : a.shape[1];
  if (ka != k_)
    return Status::Invalid(prefix() + "A has shape " + shape_str(a.shape) + " with K = " + std::to_string(ka) +
                           " but the weight has K = " + std::to_string(k_));
  int64_t c_rows = 1, c_cols = 1;
  if (c.present) {
    const auto& cs = c.shape;
    bool ok = cs.size() <= 2;
    if (cs.size() == 1) c_cols = cs[0];
    if (cs.size() == 2) c_rows = cs[0], c_cols = cs[1];
    ok = ok && (c_rows == 1 || c_rows == m) && (c_cols == 1 || c_cols == n_);
    if (!ok)
      return Status::Invalid(prefix() + "C has shape " + shape_str(cs) + ", not unidirectionally broadcastable to " +
                             shape_str({m, n_}));
  }
  TensorRef y;
  INQ_RETURN_IF_ERROR(output(api_, ctx, 0, {m, n_}, &y));
  return run(ctx, static_cast<const float*>(a.data), m, c, c_rows, c_cols, static_cast<float*>(y.data));
}

Status ShiftGemm::run(OrtKernelContext* ctx, const float* ad, int64_t m, const TensorRef& c, int64_t c_rows,
                      int64_t c_cols, float* yd) const {
  std::unique_ptr<GemmWeights> runtime_b;
  const GemmWeights* w = constant_b_.get();
  if (!w) {
    TensorRef packed_input;
    INQ_RETURN_IF_ERROR(input(api_, ctx, 1, &packed_input));
    runtime_b = std::make_unique<GemmWeights>();
    INQ_RETURN_IF_ERROR(prepare(packed_input, runtime_b.get()));
    w = runtime_b.get();
  }
  if (m == 0 || n_ == 0) return Status();
  OrtTaskRunner pool(api_, ctx);

  if (w->gemv && m <= GemmWeights::kGemvRows) {
    std::vector<float> rows;  // A' row-major when A is given transposed
    if (trans_a_) {
      rows.resize(static_cast<size_t>(m * k_));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t d = 0; d < k_; ++d) rows[i * k_ + d] = ad[d * m + i];
      ad = rows.data();
    }
    Epilogue ep = fused_;
    std::vector<float> c_storage;
    c_epilogue(c, m, c_rows, c_cols, &c_storage, &ep);
    const std::string err =
        integer_ ? w->gemv_int.run(ad, k_, m, CodeQuant{x_quant_.scale, x_quant_.zero_point}, alpha_, ep, yd, n_,
                                   pool.runner)
                 : w->gemv_float.run(ad, k_, m, alpha_, ep, yd, n_, pool.runner);
    if (!err.empty()) return Status(ORT_RUNTIME_EXCEPTION, prefix() + err);
    return Status();
  }
  INQ_RETURN_IF_ERROR(blocked_operand(*w));
  if (integer_) {
    Epilogue ep = fused_;
    std::vector<float> c_storage;
    c_epilogue(c, m, c_rows, c_cols, &c_storage, &ep);
    qgemm_forward(w->levels, m, trans_a_, ad, x_quant_, ep, yd, pool.runner);
    return Status();
  }
  const bool use_c = c.present && beta_ != 0.0f;
  float_gemm(*w, ad, m, use_c ? static_cast<const float*>(c.data) : nullptr, c_rows, c_cols, yd, pool.runner);
  return Status();
}

void ShiftGemm::float_gemm(const GemmWeights& w, const float* ad, int64_t m, const float* cd, int64_t c_rows,
                           int64_t c_cols, float* yd, const TaskRunner& runner) const {
  const MicroKernel& uk = active_kernel();
  const PrepackedPanels* bp = &w.panels;
  const StridedPanels a_src(ad, trans_a_ ? 1 : k_, trans_a_ ? m : 1);

  // Tasks: blocks of up to 192 rows x 256 columns, smaller blocks of columns if that gives too few tasks.
  const int64_t mb = std::max<int64_t>(uk.mr, 192 / uk.mr * uk.mr);
  const int64_t row_blocks = (m + mb - 1) / mb;
  int64_t nb = std::max<int64_t>(1, 256 / uk.nr) * uk.nr;
  if (row_blocks * ((n_ + nb - 1) / nb) < 8) {
    const int64_t want = (8 + row_blocks - 1) / row_blocks;
    nb = std::max<int64_t>(uk.nr, (n_ + want - 1) / want / uk.nr * uk.nr);
  }
  const int64_t col_blocks = (n_ + nb - 1) / nb;
  const int64_t n = n_, k = k_;
  const float alpha = alpha_, beta = beta_;
  const Epilogue& fused = fused_;
  runner.run(static_cast<size_t>(row_blocks * col_blocks), [&](size_t t) {
    const int64_t i0 = static_cast<int64_t>(t) / col_blocks * mb, j0 = static_cast<int64_t>(t) % col_blocks * nb;
    const int64_t mi = std::min(mb, m - i0), nj = std::min(nb, n - j0);
    if (cd) {
      for (int64_t i = 0; i < mi; ++i) {
        const float* crow = cd + (c_rows == 1 ? 0 : (i0 + i) * c_cols);
        float* yrow = yd + (i0 + i) * n + j0;
        if (c_cols == 1) {
          for (int64_t j = 0; j < nj; ++j) yrow[j] = beta * crow[0];
        } else {
          for (int64_t j = 0; j < nj; ++j) yrow[j] = beta * crow[j0 + j];
        }
      }
    }
    const OffsetPanels a_blk(a_src, i0);
    const OffsetPanels b_blk(*bp, j0);
    GemmArgs args;
    args.scratch = &w.pool;
    args.m = mi;
    args.n = nj;
    args.k = k;
    args.a = &a_blk;
    args.b = &b_blk;
    args.c = yd + i0 * n + j0;
    args.ldc = n;
    args.alpha = alpha;
    args.accumulate = cd != nullptr;
    gemm(uk, args);
    if (fused.activation != Activation::kNone) finish_rows(fused, args.c, n, args.c, n, mi, nj, nullptr, 0);
  });
}

}  // namespace inq
