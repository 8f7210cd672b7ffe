#include "gate/access.h"

namespace qufop::gate {

Access check_access(const Snapshot& snapshot, const Route& route, const User* caller) {
  if (route.mode == api::UfopMode::kPublic) return Access::kAllow;
  if (!caller) return Access::kUnauthenticated;
  if (caller->admin || caller->access_key == route.owner) return Access::kAllow;
  if (route.mode == api::UfopMode::kSemiPublic &&
      snapshot.uses.count(caller->access_key + "/" + route.name)) {
    return Access::kAllow;
  }
  return Access::kForbidden;
}

}  // namespace qufop::gate
