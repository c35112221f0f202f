// Tables in docs/ that tests generate from what they measure (the crash matrix, the pause matrix):
// the markdown between `<!-- name -->` and `<!-- /name -->` must be what the test measured, or the
// test fails and prints it; FEDCAL_UPDATE_DOCS=1 writes it there instead.
#pragma once

#include <string>
#include <vector>

namespace fedcal {

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// `doc`: a path relative to the source tree ("docs/DURABILITY.md").
void check_docs_table(const std::string& doc, const std::string& name, const std::string& table);

}  // namespace fedcal
