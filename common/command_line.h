// The one process boundary of fedcal's command-line tools (fedcal-model, fedcal-coordinator,
// fedcal-agent): parse argv, run the selected subcommand, and turn whatever ends it into an exit
// code. --help exits 0; a usage error prints CLI11's message and exits 2; anything thrown prints
// "NAME: error: MESSAGE" and exits with the code of its kind (process_exit_code in error.h).
// --version prints "NAME VERSION" and exits 0.
// A template over CLI11's types (run_command_line<CLI::ParseError>(app, ...)), so this library need
// not depend on CLI11.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "common/error.h"

namespace fedcal {

template <typename ParseError, typename App>
int run_command_line(App& app, const char* name, int argc, char** argv) {
  app.set_version_flag("--version", std::string(name) + " " + FEDCAL_VERSION);
  try {
    app.parse(argc, argv);
    return 0;
  } catch (const ParseError& error) {
    return app.exit(error) == 0 ? 0 : kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory\n", name);
    return process_exit_code(ErrorKind::kIo);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: error: %s\n", name, error.what());
    return process_exit_code(kind_of(error));
  } catch (...) {
    std::fprintf(stderr, "%s: error: an exception of unknown type\n", name);
    return process_exit_code(ErrorKind::kInternal);
  }
}

}  // namespace fedcal
