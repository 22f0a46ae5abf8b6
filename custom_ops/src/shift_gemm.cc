// ShiftGemm kernel: Y = alpha * A' * decode(B_packed)' + beta * C, tasks over (M block, N block).
#include "shift_gemm.h"

#include <algorithm>

#include "kernels/packed_weights.h"

namespace inq {

OpSpec ShiftGemm::spec() {
  return kernel_op_spec<ShiftGemm>({ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
                                   {false, false, true});
}

std::string ShiftGemm::prefix() const {
  return "ShiftGemm (weight_shape " + shape_str(weight_.shape) + ", transA " + std::to_string(trans_a_) +
         ", transB " + std::to_string(trans_b_) + "): ";
}

Status ShiftGemm::init(const OrtKernelInfo* info) {
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

  INQ_RETURN_IF_ERROR(read_activation(api_, info, "ShiftGemm: ", &fused_));
  INQ_RETURN_IF_ERROR(read_packed_shape(api_, info, kName, {2}, &weight_));
  k_ = trans_b_ ? weight_.shape[1] : weight_.shape[0];
  n_ = trans_b_ ? weight_.shape[0] : weight_.shape[1];
  weight_.channel_axis = trans_b_ ? 0 : 1;  // the N axis
  INQ_RETURN_IF_ERROR(read_exponent_base(api_, info, prefix(), n_, "N", &weight_));

  INQ_RETURN_IF_ERROR(read_integer_mode(api_, info, prefix(), &integer_, &x_quant_));

  TensorRef packed;
  INQ_RETURN_IF_ERROR(constant_input(api_, info, 1, &packed));
  if (packed.present && integer_) {
    auto b = std::make_unique<QGemmWeights>();
    INQ_RETURN_IF_ERROR(decode_integer(packed, b.get()));
    constant_qb_ = std::move(b);
  } else if (packed.present) {
    auto b = std::make_unique<PrepackedPanels>();
    INQ_RETURN_IF_ERROR(decode(packed, b.get()));
    constant_b_ = std::move(b);
  }
  return Status();
}

Status ShiftGemm::decode(const TensorRef& packed, PrepackedPanels* out) const {
  std::vector<float> dense;
  INQ_RETURN_IF_ERROR(decode_packed(packed, weight_, prefix(), "B_packed", &dense));
  // B operand: rows n, depth k.
  if (trans_b_) out->pack(dense.data(), k_, 1, n_, k_, active_kernel().nr);
  else out->pack(dense.data(), 1, n_, n_, k_, active_kernel().nr);
  return Status();
}

Status ShiftGemm::decode_integer(const TensorRef& packed, QGemmWeights* out) const {
  const std::string where = prefix() + "B_packed";
  if (packed.shape.size() != 1) return Status::Invalid(where + ": must be 1-D");
  const std::string size_err = check_packed_size(packed.count, weight_.bits, weight_.shape);
  if (!size_err.empty()) return Status::Invalid(where + ": " + size_err);
  std::vector<int16_t> levels(static_cast<size_t>(element_count(weight_.shape)));
  std::vector<float> unit;
  std::string err = decode_levels(static_cast<const uint8_t*>(packed.data), packed.count, weight_.bits,
                                  weight_.shape, weight_.exponent_base, weight_.channel_axis, levels.data(), &unit);
  if (!err.empty()) return Status::Invalid(where + ": " + err);
  if (unit.size() == 1) unit.assign(static_cast<size_t>(n_), unit[0]);
  err = out->prepare(k_, n_, trans_b_, levels.data(), unit.data(), alpha_);
  if (!err.empty()) return Status::Invalid(where + ": " + err);
  return Status();
}

Status ShiftGemm::compute_integer(OrtKernelContext* ctx, const TensorRef& a, const TensorRef& c, int64_t m,
                                  int64_t c_rows, int64_t c_cols, float* y) const {
  QGemmWeights runtime_b;
  const QGemmWeights* qb = constant_qb_.get();
  if (!qb) {
    TensorRef packed;
    INQ_RETURN_IF_ERROR(input(api_, ctx, 1, &packed));
    INQ_RETURN_IF_ERROR(decode_integer(packed, &runtime_b));
    qb = &runtime_b;
  }
  Epilogue ep = fused_;
  std::vector<float> bias, summand;
  if (c.present && beta_ != 0.0f) {
    const float* cd = static_cast<const float*>(c.data);
    if (c_rows == 1 && c_cols == n_) {  // one value per column: the bias
      bias.assign(cd, cd + n_);
      for (float& v : bias) v *= beta_;
      ep.bias = bias.data();
    } else {  // any other broadcast: expanded to (M, N)
      summand.resize(static_cast<size_t>(m * n_));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n_; ++j)
          summand[i * n_ + j] = beta_ * cd[(c_rows == 1 ? 0 : i * c_cols) + (c_cols == 1 ? 0 : j)];
      ep.summand = summand.data();
    }
  }
  OrtTaskRunner pool(api_, ctx);
  qgemm_forward(*qb, m, trans_a_, static_cast<const float*>(a.data), x_quant_, ep, y, pool.runner);
  return Status();
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
  const bool use_c = c.present && beta_ != 0.0f;
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

  if (integer_) {
    TensorRef y;
    INQ_RETURN_IF_ERROR(output(api_, ctx, 0, {m, n_}, &y));
    if (y.count == 0) return Status();
    return compute_integer(ctx, a, c, m, c_rows, c_cols, static_cast<float*>(y.data));
  }
  PrepackedPanels runtime_b;
  const PrepackedPanels* bp = constant_b_.get();
  if (!bp) {
    TensorRef packed;
    INQ_RETURN_IF_ERROR(input(api_, ctx, 1, &packed));
    INQ_RETURN_IF_ERROR(decode(packed, &runtime_b));
    bp = &runtime_b;
  }
  TensorRef y;
  INQ_RETURN_IF_ERROR(output(api_, ctx, 0, {m, n_}, &y));
  if (y.count == 0) return Status();

  const MicroKernel& uk = active_kernel();
  const float* ad = static_cast<const float*>(a.data);
  const float* cd = use_c ? static_cast<const float*>(c.data) : nullptr;
  float* yd = static_cast<float*>(y.data);
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
  OrtTaskRunner pool(api_, ctx);
  pool.runner.run(static_cast<size_t>(row_blocks * col_blocks), [&](size_t t) {
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
  return Status();
}

}  // namespace inq
