// libFuzzer target: any bytes as a GGUF file. Errors are expected; crashes, leaks, reads out
// of bounds and undefined behaviour are not.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "engine/gguf.h"
#include "engine/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("gguf-fuzz", 0);
  if (fd < 0) return 0;
  if (write(fd, data, size) != static_cast<ssize_t>(size)) {
    close(fd);
    return 0;
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    const auto f = tandem::GgufFile::open(path);
    for (const tandem::TensorView& t : f->tensors()) {
      volatile uint8_t sink = t.n_bytes ? t.data[t.n_bytes - 1] : 0;  // every tensor is in bounds
      (void)sink;
    }
    tandem::Model::load(path);  // the model binder on whatever parsed
  } catch (const std::exception&) {
  }
  close(fd);
  return 0;
}
