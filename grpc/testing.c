/* grpc/testing.c — grpc.testing.TestService for the interop test cases.
 * (Being written: registers nothing yet.) */
#include "grpc/grpc-private.h"

void grpc_testing_register(grpc_server *g) { (void)g; }
