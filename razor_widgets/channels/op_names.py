"""The names of the torch ops that move channels in the simple ways (data, not rules): an op
here keeps channels where they are (``PASSTHROUGH``), broadcasts operands together
(``ELEMENTWISE``), makes new data (``CREATION``) or reduces over dims (``REDUCTIONS``).
``rules.py`` gives them their rules;
``derived_weights.py`` reads them to follow a weight computed from a stored one."""

PASSTHROUGH = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_",
    "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "mish", "softplus", "softsign",
    "logsigmoid", "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "clone", "contiguous", "detach", "float", "half", "double",
    "bfloat16", "to", "type", "type_as", "abs", "neg", "exp", "log", "sqrt", "rsqrt", "square",
    "sin", "cos", "erf", "reciprocal", "sign", "clamp", "clamp_", "clamp_min", "clamp_max",
    "requires_grad_", "__neg__", "pow", "__pow__", "stochastic_depth", "identity",
    "log_sigmoid", "hardshrink", "softshrink", "tanhshrink", "_threshold", "threshold", "threshold_", "rrelu",
    "rrelu_",
}
ELEMENTWISE = {
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide",
    "floor_divide", "remainder", "maximum", "minimum", "where", "addcmul", "lerp", "masked_fill",
    "masked_fill_", "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__",
    "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "eq", "ne",
    "gt", "lt", "ge", "le", "__eq__", "__ne__", "__gt__", "__lt__", "__ge__", "__le__",
    "__and__", "__or__", "logical_and", "logical_or", "copy_",
}
CREATION = {
    "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint", "zeros_like",
    "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
    "new_full", "new_empty", "new_tensor", "tensor", "as_tensor", "linspace", "eye",
    "bernoulli", "bernoulli_", "normal_", "uniform_", "fill_", "zero_", "div_scalar",
}
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "softmax", "log_softmax", "normalize",
              "logsumexp", "prod", "cumsum", "cumprod"}
