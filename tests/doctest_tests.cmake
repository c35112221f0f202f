# CTest tests from a doctest binary's test cases, labelled by tier.
#
# A test case's labels are the words of its doctest test suite (`* doctest::test_suite("fleet robustness")`),
# or the binary's default label when it names none. The tiers (README.md, "The two commands"):
#   unit        in-process, seconds                     robustness  untrusted input, crashes, the threat model
#   fleet       real coordinator and agent processes    oracle      needs the npm oracles (tests/oracles)
#   slow        minutes, held-out evaluations           packaging   the .deb packages
#   timing      judged against timeouts too tight to share the machine (a 1.5 s agent timeout)
# Labels bring properties: `timing` runs alone (RUN_SERIAL: beside another test its agents were
# starved past their timeout in CI); `slow` holds the "slow" lock (one at a time, on one core: it runs
# beside the fleets, as a fuzzer does in the sanitizer build; the g++ tests took 366 s, 483-524 s when
# each slow test ran alone on both cores); `fleet` holds the "fleet" lock (RESOURCE_LOCK), so `ctest
# -j` never runs two multi-process fleets side by side, and reserves FEDCAL_FLEET_PROCESSORS cores
# (PROCESSORS, default 1: a unit test, a slow test or a fuzzer may run beside it: the suite's sanitizer
# tests took 258 s, 300 s with fleets reserving both cores).
#
# Used twice: tests/CMakeLists.txt includes it for fedcal_doctest_tests(), which writes a small file
# that CTest includes when it starts; that file includes this one again and calls
# fedcal_add_listed_tests(), which lists the test cases (`--list-test-cases --reporters=xml`, one run
# of the binary) and adds them. A test case added, renamed or relabelled needs no CMake run.

# fedcal_doctest_tests(TARGET DEFAULT_LABEL): registers TARGET's test cases (at ctest time).
function(fedcal_doctest_tests target default_label)
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake")
  file(GENERATE OUTPUT "${include_file}" CONTENT
"include([==[${CMAKE_CURRENT_FUNCTION_LIST_FILE}]==])
fedcal_add_listed_tests([==[$<TARGET_FILE:${target}>]==] ${default_label} [==[${CMAKE_BINARY_DIR}]==] ${FEDCAL_FLEET_PROCESSORS})
")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()

# XML attribute text as doctest's XmlWriter escapes it.
function(fedcal_xml_unescape var)
  set(text "${${var}}")
  string(REPLACE "&quot;" "\"" text "${text}")
  string(REPLACE "&apos;" "'" text "${text}")
  string(REPLACE "&lt;" "<" text "${text}")
  string(REPLACE "&gt;" ">" text "${text}")
  string(REPLACE "&amp;" "&" text "${text}")
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

function(fedcal_add_listed_tests executable default_label working_dir fleet_processors)
  if(NOT EXISTS "${executable}")
    add_test("${executable} is not built" "${executable}")
    return()
  endif()
  execute_process(COMMAND "${executable}" --list-test-cases --reporters=xml --no-version=true
                  OUTPUT_VARIABLE listing RESULT_VARIABLE status WORKING_DIRECTORY "${working_dir}")
  if(NOT status EQUAL 0)
    add_test("${executable} cannot list its test cases (exit ${status})" "${executable}" --list-test-cases)
    return()
  endif()
  # One <TestCase name="..." [testsuite="..."] .../> per test case. Walked as a string, not a CMake
  # list: a list would split names at ';' and keep '[...]' together.
  while(listing MATCHES "<TestCase name=\"([^\"]*)\"( testsuite=\"([^\"]*)\")?")
    string(FIND "${listing}" "${CMAKE_MATCH_0}" at)
    string(LENGTH "${CMAKE_MATCH_0}" length)
    math(EXPR rest "${at} + ${length}")
    string(SUBSTRING "${listing}" ${rest} -1 listing)
    set(name "${CMAKE_MATCH_1}")
    set(suite "")
    if(NOT CMAKE_MATCH_2 STREQUAL "")  # doctest leaves the attribute out where the suite is empty
      set(suite "${CMAKE_MATCH_3}")
    endif()
    fedcal_xml_unescape(name)
    if(suite STREQUAL "")
      set(labels ${default_label})
    else()
      string(REPLACE " " ";" labels "${suite}")
    endif()
    foreach(label IN LISTS labels)
      if(NOT label MATCHES "^(unit|fleet|robustness|slow|oracle|packaging|timing)$")
        # A misspelt tier would drop the test from every `ctest -L` selection: it fails instead.
        add_test("${name}: unknown label '${label}' (tests/doctest_tests.cmake lists the tiers)" false)
      endif()
    endforeach()
    set(properties WORKING_DIRECTORY "${working_dir}")
    list(FIND labels slow slow_at)  # list(FIND), not IN_LIST: CTest reads this file without policies
    list(FIND labels timing timing_at)
    list(FIND labels fleet fleet_at)
    if(timing_at GREATER -1)
      list(APPEND properties RUN_SERIAL TRUE)
    elseif(slow_at GREATER -1)
      list(APPEND properties RESOURCE_LOCK slow)
    elseif(fleet_at GREATER -1)
      list(APPEND properties RESOURCE_LOCK fleet PROCESSORS ${fleet_processors})
    endif()
    # doctest's --test-case takes a comma-separated list of filters: a comma in a name is escaped.
    string(REPLACE "," "\\," filter "${name}")
    add_test("${name}" "${executable}" "--test-case=${filter}")
    set_tests_properties("${name}" PROPERTIES LABELS "${labels}" ${properties})
  endwhile()
endfunction()
