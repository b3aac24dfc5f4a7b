// tokenize_threads SPM_MODEL FILE.tsv THREADS: one DebertaTokenizer shared by THREADS threads, each encoding every row
// of column 0; exit 0 when every thread's ids equal a single-threaded pass (the header's thread-safety promise).
#include <debx/tokenizer.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv)
{
    if (argc < 4)
    {
        std::cerr << "usage: tokenize_threads SPM_MODEL FILE.tsv THREADS\n";
        return 2;
    }
    debx::runtime::DebertaTokenizer const tokenizer(argv[1]);
    std::ifstream in(argv[2]);
    std::vector<std::string> rows;
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line))
        if (!line.empty())
            rows.push_back(line.substr(0, line.find('\t')));
    auto encodeAll = [&](std::vector<std::vector<int64_t>>& out) {
        out.clear();
        for (int repeat = 0; repeat < 3; ++repeat)
            for (auto const& r : rows)
                out.push_back(tokenizer.encode(r, nullptr, 128).inputIds);
    };
    std::vector<std::vector<int64_t>> reference;
    encodeAll(reference);
    int const n = std::atoi(argv[3]);
    std::vector<std::vector<std::vector<int64_t>>> results(n);
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t)
        threads.emplace_back([&, t] { encodeAll(results[t]); });
    for (auto& t : threads)
        t.join();
    for (int t = 0; t < n; ++t)
        if (results[t] != reference)
        {
            std::cerr << "thread " << t << " differs\n";
            return 1;
        }
    std::cout << n << " threads x " << reference.size() << " encodings: identical\n";
    return 0;
}
