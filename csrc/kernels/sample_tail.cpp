// sample_tail (sample_tail.h): each step is sampling.py's, with numpy's arithmetic in numpy's order (np.sum is
// pairwise, np.cumsum and the comparisons sequential), so that a draw lands on the same candidate.  The candidates
// stay in ascending-id order through every step, as in the spec.
#include "sample_tail.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace pyinfer {

constexpr double TOP_P_SLACK = 1e-12;  // sampling.TOP_P_SLACK

double numpy_sum(const double* a, int64_t n) {
    if (n < 8) {
        double r = 0.0;
        for (int64_t i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

// p (n) = softmax(x): exp(x - max) / sum; false (p untouched) if the max is not finite
static bool softmax(std::vector<double>& p, const std::vector<double>& x) {
    const double mx = *std::max_element(x.begin(), x.end());
    if (!std::isfinite(mx)) return false;
    p.resize(x.size());
    for (size_t i = 0; i < x.size(); i++) p[i] = std::exp(x[i] - mx);
    const double s = numpy_sum(p.data(), (int64_t)p.size());
    for (double& v : p) v /= s;
    return true;
}

// keeps x[i], pos[i] where keep[i], in order
static void compact(std::vector<double>& x, std::vector<int64_t>& pos, const std::vector<char>& keep) {
    size_t m = 0;
    for (size_t i = 0; i < x.size(); i++)
        if (keep[i]) x[m] = x[i], pos[m++] = pos[i];
    x.resize(m);
    pos.resize(m);
}

int64_t sample_tail(const double* x0, int64_t n, double top_p, double min_p, double temperature, double u) {
    std::vector<double> x(x0, x0 + n), p;
    std::vector<int64_t> pos(n);  // positions in x0 of the candidates left
    std::iota(pos.begin(), pos.end(), 0);
    if (top_p < 1.0) {  // apply_top_p: the most probable first (equal logits: lower position first) up to cum >= p
        if (!softmax(p, x)) return -1;
        std::vector<int64_t> order(x.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return -x[a] < -x[b]; });
        double cum = 0.0;
        size_t n_keep = 1;  // 1 + how many cumulative sums lie below p - slack
        for (size_t i = 0; i < order.size(); i++) {
            cum += p[order[i]];
            if (cum < top_p - TOP_P_SLACK) n_keep++;
        }
        if (n_keep < x.size()) {
            std::vector<char> keep(x.size(), 0);
            for (size_t i = 0; i < n_keep; i++) keep[order[i]] = 1;
            compact(x, pos, keep);
        }
    }
    if (min_p > 0.0) {  // apply_min_p: logit >= max + log(p)
        const double mx = *std::max_element(x.begin(), x.end());
        if (!std::isfinite(mx)) return -1;
        const double thr = mx + std::log(min_p) - TOP_P_SLACK;
        std::vector<char> keep(x.size());
        for (size_t i = 0; i < x.size(); i++) keep[i] = x[i] >= thr;
        compact(x, pos, keep);
    }
    if (temperature != 1.0)
        for (double& v : x) v /= temperature;
    // select_dist: the first cdf entry above u * total; u rounded up onto the total takes the last with any mass
    if (!softmax(p, x)) return -1;
    std::vector<double> cdf(p.size());
    double c = 0.0;
    for (size_t i = 0; i < p.size(); i++) cdf[i] = c += p[i];
    const double uu = u * cdf.back();
    size_t i = std::upper_bound(cdf.begin(), cdf.end(), uu) - cdf.begin();
    if (i >= p.size()) {
        i = p.size() - 1;
        while (i > 0 && p[i] == 0.0) i--;
    }
    return pos[i];
}

}  // namespace pyinfer
