// libFuzzer target: encode and decode arbitrary bytes with an SPM and a byte-level BPE
// vocabulary. Byte-level BPE is lossless, so decode(encode(s)) must give s back.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

namespace {

struct Vocabs {
  std::unique_ptr<tandem::GgufFile> spm_file, bpe_file;
  std::unique_ptr<tandem::Tokenizer> spm, bpe;
  Vocabs() {
    const char* dir = std::getenv("TANDEM_SHARED_DIR");
    const std::string shared = dir ? dir : TANDEM_DEFAULT_SHARED_DIR;
    spm_file = tandem::GgufFile::open(std::string(TANDEM_SOURCE_DIR) + "/tools/vocab/ggml-vocab-llama-spm.gguf");
    spm = tandem::Tokenizer::from_gguf(*spm_file);
    try {
      bpe_file = tandem::GgufFile::open(shared + "/tokenizer/ggml-vocab-qwen3.gguf");
      bpe = tandem::Tokenizer::from_gguf(*bpe_file);
    } catch (const std::exception&) {
      // without the reference data only the shipped SPM vocabulary is fuzzed
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Vocabs v;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const tandem::Tokenizer* tok : {v.spm.get(), v.bpe.get()}) {
    if (!tok) continue;
    for (bool special : {false, true}) {
      const auto ids = tok->encode(text, special, special);
      const std::string back = tok->decode(ids, true);
      tandem::TextStreamer streamer(*tok);
      std::string streamed;
      for (int32_t id : ids) streamed += streamer.push(id);
      streamed += streamer.flush();
      if (tok == v.bpe.get() && !special && back != text) std::abort();  // byte-level BPE is lossless
    }
  }
  return 0;
}
