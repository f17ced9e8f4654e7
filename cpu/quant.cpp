// Placeholder until the reference quantization lands.
#include "cpu/quant.h"
