// ShiftMatMul kernel: A (..., K) viewed as rows x K, one ShiftGemm product, Y (..., N).
#include "shift_matmul.h"

namespace inq {

OpSpec ShiftMatMul::spec() {
  return kernel_op_spec<ShiftMatMul>({ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
                                     {false, false, true});
}

Status ShiftMatMul::compute(OrtKernelContext* ctx) const {
  const OrtApi* api = gemm_.api();
  TensorRef a, bias;
  INQ_RETURN_IF_ERROR(input(api, ctx, 0, &a));
  INQ_RETURN_IF_ERROR(input(api, ctx, 2, &bias));
  const int64_t k = gemm_.k(), n = gemm_.n();
  if (!a.present || a.shape.empty())
    return Status::Invalid(gemm_.prefix() + "A must have rank 1 or more, got shape " + shape_str(a.shape));
  if (a.shape.back() != k)
    return Status::Invalid(gemm_.prefix() + "A has shape " + shape_str(a.shape) + " with K = " +
                           std::to_string(a.shape.back()) + " but the weight has K = " + std::to_string(k));
  if (bias.present && (bias.shape.size() != 1 || bias.shape[0] != n))
    return Status::Invalid(gemm_.prefix() + "Bias has shape " + shape_str(bias.shape) + ", expected [" +
                           std::to_string(n) + "]");
  std::vector<int64_t> y_shape(a.shape.begin(), a.shape.end() - 1);
  int64_t rows = 1;
  for (int64_t d : y_shape) rows *= d;  // fits: ORT allocated A, which holds rows * K elements
  y_shape.push_back(n);
  TensorRef y;
  INQ_RETURN_IF_ERROR(output(api, ctx, 0, y_shape, &y));
  return gemm_.run(ctx, static_cast<const float*>(a.data), rows, bias, 1, n, static_cast<float*>(y.data));
}

}  // namespace inq
