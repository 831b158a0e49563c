"""Deployment transforms of an exported (folded) ONNX model: half precision (:mod:`.fp16`) and
static int8 quantisation calibrated on the user's data (:mod:`.int8`).

Both start from the float32 export that bnconvert folded in float64, and both are checked against
the float reference with a tolerance that suits the precision, stated in their report.
"""
