#include <stddef.h>
#include <stdint.h>
/* libFuzzer's driver (compiler-rt, linked by -sanitize=fuzzer), called from our own main: on Linux
   SwiftPM links an executable target's main to `<module>_main`, so libFuzzer's main() is not used. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
