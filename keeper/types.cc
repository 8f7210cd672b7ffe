#include "keeper/types.h"

namespace qufop::keeper {

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  // Drop trailing 0xff bytes, then bump the last byte; an all-0xff prefix means "to the end".
  while (!end.empty()) {
    auto last = static_cast<unsigned char>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace qufop::keeper
