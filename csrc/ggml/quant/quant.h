/* Block-quantized types (formats.md §5): reference codecs and dot products.
 * Until a codec is implemented its macro is NULL and the type table reports the type as unsupported. */
#ifndef RG_QUANT_H
#define RG_QUANT_H

#include <stdint.h>

#define RG_Q4_0_TO_F32 NULL
#define RG_Q4_0_FROM_F32 NULL
#define RG_Q4_1_TO_F32 NULL
#define RG_Q4_1_FROM_F32 NULL
#define RG_Q5_0_TO_F32 NULL
#define RG_Q5_0_FROM_F32 NULL
#define RG_Q5_1_TO_F32 NULL
#define RG_Q5_1_FROM_F32 NULL
#define RG_Q8_0_TO_F32 NULL
#define RG_Q8_0_FROM_F32 NULL

#endif
