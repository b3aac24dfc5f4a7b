// classify_tsv PLAN SPM_MODEL FILE.tsv [THREADS] [--plugins LIB]...: the predicted class of every row of column 0 of
// a GLUE TSV file (header skipped), one line per row, in file order. One debx::runtime::Engine for the process, one
// Session per worker thread (engine.h's thread-safety contract), batches of 8 rows padded like transformers.
#include <debx/engine.h>
#include <debx/tokenizer.h>

#include <algorithm>
#include <atomic>
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
        std::cerr << "usage: classify_tsv PLAN SPM_MODEL FILE.tsv [THREADS] [--plugins LIB]...\n";
        return 2;
    }
    int threads = 2;
    std::vector<std::string> plugins;
    for (int i = 4; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--plugins" && i + 1 < argc)
            plugins.emplace_back(argv[++i]);
        else
            threads = std::max(1, std::atoi(argv[i]));
    }
    std::vector<std::string> rows;
    std::ifstream in(argv[3]);
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line))
        if (!line.empty())
            rows.push_back(line.substr(0, line.find('\t')));
    try
    {
        debx::runtime::Engine const engine(argv[1], plugins);
        debx::runtime::DebertaTokenizer const tokenizer(argv[2]); // shared: its calls are const and thread-safe
        size_t const batchSize = 8;
        std::vector<int> predictions(rows.size(), -1);
        std::atomic<size_t> next{0};
        std::vector<std::string> errors(threads);
        auto worker = [&](int t) {
            try
            {
                std::unique_ptr<debx::runtime::Session> session = engine.createSession(); // this thread's own
                for (size_t start = next.fetch_add(batchSize); start < rows.size(); start = next.fetch_add(batchSize))
                {
                    std::vector<debx::runtime::Encoding> batch;
                    for (size_t r = start; r < std::min(rows.size(), start + batchSize); ++r)
                        batch.push_back(tokenizer.encode(rows[r], nullptr, 128));
                    tokenizer.padBatch(batch);
                    for (debx::runtime::Output const& out : session->run(batch))
                    {
                        if (out.name != "logits")
                            continue;
                        size_t const classes = static_cast<size_t>(out.shape[1]);
                        for (size_t b = 0; b < batch.size(); ++b)
                        {
                            auto const first = out.values.begin() + static_cast<long>(b * classes);
                            predictions[start + b]
                                = static_cast<int>(std::max_element(first, first + static_cast<long>(classes)) - first);
                        }
                    }
                }
            }
            catch (std::exception const& e)
            {
                errors[t] = e.what();
            }
        };
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back(worker, t);
        for (auto& t : pool)
            t.join();
        for (std::string const& e : errors)
            if (!e.empty())
                throw std::runtime_error(e);
        for (int p : predictions)
            std::cout << p << "\n";
    }
    catch (std::exception const& e)
    {
        std::cerr << "classify_tsv: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
