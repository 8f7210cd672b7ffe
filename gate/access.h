// Who may call a UFOP (DESIGN.md "Control flow"): mode 0 public — anyone, unsigned too;
// 1 semi-public — its owner, admins, and users who added it (/uses/<ak>/<ufop>); 2 private —
// its owner and admins.
#pragma once

#include "gate/table.h"

namespace qufop::gate {

enum class Access {
  kAllow,
  kUnauthenticated,  // 401: unsigned call to a non-public UFOP
  kForbidden,        // 403: signed, not allowed
};

// `caller` is null for an unsigned request.
Access check_access(const Snapshot& snapshot, const Route& route, const User* caller);

}  // namespace qufop::gate
