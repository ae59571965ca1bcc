/* grpc/reflection.c — grpc.reflection.v1 and v1alpha ServerReflection.
 * (Being written: registers nothing yet.) */
#include "grpc/grpc-private.h"

void grpc_reflection_register(grpc_server *g) { (void)g; }
