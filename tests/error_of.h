// The message a failing call throws, for doctest tests of error paths (beside test_support.h, which
// programs without doctest also use).
#pragma once

#include <doctest/doctest.h>

#include <string>

#include "common/error.h"

namespace fedcal::testing {

// The message of the fedcal::Error that `body` throws (fails the test if it throws nothing).
template <typename Body>
std::string error_of(Body body) {
  try {
    body();
  } catch (const Error& error) {
    return error.what();
  }
  FAIL("expected an Error");
  return "";
}

}  // namespace fedcal::testing
