// The one translation unit that compiles Asio and Beast (BOOST_*_SEPARATE_COMPILATION is set on
// qufop_common), so the rest of the tree only sees their declarations.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
