// Dropping privileges in the sandbox's final process, just before exec: groups, gid, uid,
// capabilities (bounding, effective, permitted, inheritable, ambient), no_new_privs, rlimits.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "noded/spec.h"

namespace qufop::noded {

// Parses "CAP_NET_BIND_SERVICE" / "net_bind_service" into capability numbers; unknown names are
// Error::invalid naming the name.
Result<std::vector<int>> parse_capabilities(const std::vector<std::string>& names);

// In order: rlimits, setgroups([gid]), setresgid, keep caps across setresuid (PR_SET_KEEPCAPS),
// setresuid, drop every capability not in `keep` from all sets (bounding set too), raise `keep`
// into ambient so the exec'd program has them, PR_SET_NO_NEW_PRIVS. Runs in a child after fork:
// no allocation after the first call.
Result<void> drop_privileges(uint32_t uid, uint32_t gid, const std::vector<int>& keep,
                             const Limits& limits);

}  // namespace qufop::noded
