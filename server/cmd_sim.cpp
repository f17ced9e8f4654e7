// Placeholder: replaced by the real command when its component lands.
#include <stdexcept>

#include "server/commands.h"

namespace tandem {

int cmd_sim(const Args&) { throw std::runtime_error("'sim' is not available in this build yet"); }

}  // namespace tandem
