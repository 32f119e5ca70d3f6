// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {GridCapacity} from "../src/GridCapacity.sol";
import {GridMarket, IGridCapacity} from "../src/GridMarket.sol";
import {TestBase} from "./TestBase.sol";

// ====================================================================== capacity

/// @notice Random oracle writes (valid and invalid, inside and outside the window) against a
/// ghost model of the bands, with time moving on.
contract CapacityHandler is TestBase {
    GridCapacity public immutable cap;
    uint32[4] public ids = [uint32(11), 12, 13, 14];
    int64[4] public ratedLo = [int64(-50_000), 0, -3_000, -int64(type(int32).max)];
    int64[4] public ratedHi = [int64(50_000), 22_000, 3_000, int64(type(int32).max)];

    uint64[] public writtenIntervals;
    mapping(uint64 => bool) public written;
    mapping(uint64 => mapping(uint32 => bool)) public ghostHas;
    mapping(uint64 => mapping(uint32 => int64)) public ghostLo;
    mapping(uint64 => mapping(uint32 => int64)) public ghostHi;
    bool public acceptedInvalid;
    bool public rejectedValid;

    constructor(GridCapacity cap_) {
        cap = cap_;
    }

    /// Let time pass by 0..2 intervals.
    function warp(uint8 steps) external {
        vm.warp(block.timestamp + uint256(steps % 3) * cap.intervalSeconds());
    }

    /// Write bands for a random subset of devices at current - 1 .. current + maxIntervalsAhead + 1.
    function writeBands(uint64 offset, uint256 seed, uint8 subset) external {
        uint64 current = cap.currentInterval();
        uint64 interval = current - 1 + uint64(bound(offset, 0, cap.maxIntervalsAhead() + 2));
        bool valid = interval >= current && interval <= current + cap.maxIntervalsAhead() && !written[interval];
        uint256 mask = bound(subset, 1, 15);
        uint256 n = 0;
        for (uint256 d = 0; d < 4; ++d) {
            if (mask & (1 << d) != 0) ++n;
        }
        uint32[] memory devs = new uint32[](n);
        int64[] memory los = new int64[](n);
        int64[] memory his = new int64[](n);
        uint256 k = 0;
        for (uint256 d = 0; d < 4; ++d) {
            if (mask & (1 << d) == 0) continue;
            (devs[k], los[k], his[k]) = _band(seed, d);
            valid = valid && los[k] <= his[k] && los[k] >= ratedLo[d] && his[k] <= ratedHi[d];
            ++k;
        }
        _try(interval, seed, devs, los, his, valid);
    }

    /// Mostly inside the rated range, sometimes up to 10% beyond either end, 1 in 7 with lo > hi.
    function _band(uint256 seed, uint256 d) internal view returns (uint32, int64, int64) {
        uint256 r = uint256(keccak256(abi.encode(seed, d)));
        int256 span = int256(ratedHi[d]) - int256(ratedLo[d]);
        int256 a = boundInt(int256(r), int256(ratedLo[d]) - span / 10, int256(ratedHi[d]) + span / 10);
        int256 b = boundInt(int256(r >> 128), int256(ratedLo[d]) - span / 10, int256(ratedHi[d]) + span / 10);
        if (r % 7 != 0 && a > b) (a, b) = (b, a);
        return (ids[d], int64(a), int64(b));
    }

    function _try(
        uint64 interval,
        uint256 seed,
        uint32[] memory devs,
        int64[] memory los,
        int64[] memory his,
        bool valid
    ) internal {
        try cap.writeBands(interval, keccak256(abi.encode(seed)), devs, los, his) {
            if (!valid) acceptedInvalid = true;
            written[interval] = true;
            writtenIntervals.push(interval);
            for (uint256 i = 0; i < devs.length; ++i) {
                ghostHas[interval][devs[i]] = true;
                ghostLo[interval][devs[i]] = los[i];
                ghostHi[interval][devs[i]] = his[i];
            }
        } catch {
            if (valid) rejectedValid = true;
        }
    }

    function writtenCount() external view returns (uint256) {
        return writtenIntervals.length;
    }
}

/// @notice Band invariants of GridCapacity under random oracle writes.
contract CapacityInvariantTest is TestBase {
    GridCapacity internal cap;
    CapacityHandler internal handler;

    function setUp() public {
        vm.warp(1_800_000_000);
        cap = new GridCapacity(address(this), 1 days, 900, 3600, 8);
        handler = new CapacityHandler(cap);
        cap.grantRole(cap.ORACLE_ROLE(), address(handler));
        for (uint256 d = 0; d < 4; ++d) {
            cap.registerDevice(
                handler.ids(d), uint32(d), GridCapacity.Kind.Other, address(1), address(2), handler.ratedLo(d), handler.ratedHi(d)
            );
        }
    }

    /// forge reads this (forge-std's StdInvariant API): fuzz only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Every written band reads back unchanged, inside its rated range, lo <= hi; devices left out
    /// of a write have no band.
    function invariant_bandsEqualGhostAndInsideRatedRange() public view {
        uint256 count = handler.writtenCount();
        for (uint256 w = 0; w < count; ++w) {
            uint64 interval = handler.writtenIntervals(w);
            for (uint256 d = 0; d < 4; ++d) {
                uint32 id = handler.ids(d);
                if (!handler.ghostHas(interval, id)) {
                    assertTrue(!cap.hasBand(id, interval), "band appeared for an unwritten device");
                    continue;
                }
                (int64 lo, int64 hi,) = cap.bandOf(id, interval);
                assertEq(int256(lo), int256(handler.ghostLo(interval, id)), "lo changed");
                assertEq(int256(hi), int256(handler.ghostHi(interval, id)), "hi changed");
                assertTrue(lo <= hi, "lo > hi stored");
                assertTrue(lo >= handler.ratedLo(d) && hi <= handler.ratedHi(d), "outside rated range");
            }
        }
    }

    /// Writes are accepted exactly when valid: inside the window, once per interval, whatever
    /// was written before (no write blocks another interval).
    function invariant_acceptsExactlyValidWrites() public view {
        assertTrue(!handler.acceptedInvalid(), "an invalid write was accepted");
        assertTrue(!handler.rejectedValid(), "a valid write was rejected");
    }
}

// ====================================================================== market

/// @notice Random orders, settlements (valid and tampered) and deviation settlements against
/// GridMarket, with time moving on. The handler is the settler; it writes bands and meter
/// totals as the oracle (a separate account: the roles exclude each other).
contract MarketHandler is TestBase {
    GridCapacity public immutable cap;
    GridMarket public immutable market;
    address public immutable oracle;
    address public immutable battery;
    address[4] public members;
    uint256[4] internal keys = [uint256(0xA1), 0xA2, 0xA3, 0xA4];
    uint32 internal constant GRID = type(uint32).max;
    uint32 internal constant BATT = type(uint32).max - 1;

    uint64[] public intervals;
    mapping(uint64 => bool) internal known;
    mapping(uint64 => GridMarket.BookOrder[]) internal books;
    mapping(uint64 => uint256[]) internal ghostFills;
    mapping(uint64 => uint256) internal totalsSeed;
    bool public tamperedAccepted;
    bool public validRejected;
    bool public secondSettlementAccepted;
    uint256 public settledCount;
    uint256 public deviationCount;
    uint256 public deviationsAfterTrades;

    constructor(GridCapacity cap_, GridMarket market_, address oracle_, address battery_) {
        cap = cap_;
        market = market_;
        oracle = oracle_;
        battery = battery_;
        for (uint256 i = 0; i < 4; ++i) {
            members[i] = vm.addr(keys[i]);
        }
    }

    // ---------------------------------------------------------------- actions

    /// Let time pass by 0..2 intervals.
    function warp(uint8 steps) external {
        vm.warp(block.timestamp + uint256(steps % 3) * market.intervalSeconds());
    }

    /// A member places a signed order for the current or one of the next two intervals.
    function placeOrder(uint8 who, uint8 side, uint64 energySeed, uint64 priceSeed, uint8 ahead) external {
        uint64 interval = market.currentInterval() + uint64(ahead % 3);
        if (!market.isOpen(interval)) return;
        uint256 i = who % 4;
        uint8 s = side % 2;
        uint64 price = priceSeed % 4 == 0
            ? (s == 0 ? market.retailTariffMicroEurPerKwh() : market.feedInTariffMicroEurPerKwh())
            : uint64(bound(priceSeed, market.minPriceMicroEurPerKwh(), market.maxPriceMicroEurPerKwh()));
        GridMarket.Order memory o = GridMarket.Order({
            prosumer: members[i],
            interval: interval,
            side: s,
            energyWh: uint64(bound(energySeed, 1, 3_000)),
            priceMicroEurPerKwh: price,
            nonce: market.nonceOf(members[i]),
            deadline: uint64(block.timestamp + 60)
        });
        (uint8 v, bytes32 r, bytes32 sg) = vm.sign(keys[i], market.hashOrder(o));
        market.submitOrderSigned(o, abi.encodePacked(r, sg, v));
        books[interval].push(GridMarket.BookOrder(o.prosumer, s, o.energyWh, price));
        _track(interval);
    }

    /// Settle a known interval with random valid trades; `tamper` % 6 != 0 breaks one rule:
    /// 1 invents an order, 2 enlarges a fill, 3 re-prices beyond a limit, 4 puts the battery
    /// 2 Wh off, 5 alters the book.
    function settle(uint8 pick, uint256 seed, uint8 tamper) external {
        _settle(_pick(pick), seed, tamper);
    }

    function _settle(uint64 interval, uint256 seed, uint8 tamper) internal {
        GridMarket.IntervalState memory st = market.intervalState(interval);
        GridMarket.BookOrder[] memory book = books[interval];
        if (st.settled || st.deviationsSettled) {
            try market.settle(interval, st.clearingPriceMicroEurPerKwh, 0, book, new GridMarket.Trade[](0)) {
                secondSettlementAccepted = true;
            } catch {}
            return;
        }
        if (!_ensureBand(interval)) return;
        (GridMarket.Trade[] memory t, uint64 clearing, int64 power, uint256[] memory fills) = _validTrades(book, seed);
        bool valid;
        (book, t, clearing, power, valid) = _tamper(tamper % 6, book, t, clearing, power, fills);
        try market.settle(interval, clearing, power, book, t) {
            if (!valid) tamperedAccepted = true;
            ghostFills[interval] = fills;
            ++settledCount;
        } catch {
            if (valid) validRejected = true;
        }
    }

    /// Settle the deviations of a known interval (the oracle writes random totals first); three
    /// times in four the handler first lets time pass to the interval's end, so deviation
    /// settlements interleave with later orders and settlements.
    function settleDeviations(uint8 pick, uint256 seed) external {
        uint64 interval = _pick(pick);
        if (seed % 4 != 0 && interval >= market.currentInterval()) {
            vm.warp(uint256(interval + 1) * market.intervalSeconds());
        }
        _settleDeviations(interval, seed);
    }

    /// The end of a run: every open interval with orders that can still get a band is settled
    /// with valid trades, then time moves past every known interval and the deviations of each
    /// one not yet settled are settled (so every run ends with deviation settlements, whatever
    /// the fuzzer chose before). Returns how many deviation settlements it made.
    function settleAllDeviations() external returns (uint256 settledNow) {
        if (intervals.length == 0) _track(market.currentInterval());
        for (uint256 w = 0; w < intervals.length; ++w) {
            GridMarket.IntervalState memory st = market.intervalState(intervals[w]);
            if (!st.settled && !st.deviationsSettled && books[intervals[w]].length != 0) {
                _settle(intervals[w], uint256(keccak256(abi.encode("end", w, block.timestamp))), 0);
            }
        }
        uint64 last = 0;
        for (uint256 w = 0; w < intervals.length; ++w) {
            if (intervals[w] > last) last = intervals[w];
        }
        if (last >= market.currentInterval()) vm.warp(uint256(last + 1) * market.intervalSeconds());
        uint256 before = deviationCount;
        for (uint256 w = 0; w < intervals.length; ++w) {
            if (!market.intervalState(intervals[w]).deviationsSettled) {
                _settleDeviations(intervals[w], uint256(keccak256(abi.encode(w, block.timestamp))));
            }
        }
        settledNow = deviationCount - before;
    }

    function _settleDeviations(uint64 interval, uint256 seed) internal {
        bool over = interval < market.currentInterval();
        if (over && cap.meterTotalsHash(interval) == 0) {
            vm.prank(oracle);
            cap.writeMeterTotals(interval, _totals(seed));
            totalsSeed[interval] = seed;
        }
        seed = totalsSeed[interval];
        GridMarket.IntervalState memory st = market.intervalState(interval);
        bool valid = over && !st.deviationsSettled;
        GridMarket.BookOrder[] memory book = st.settled ? books[interval] : new GridMarket.BookOrder[](0);
        uint256[] memory f = st.settled ? ghostFills[interval] : new uint256[](0);
        uint64[] memory fills = new uint64[](f.length);
        for (uint256 k = 0; k < f.length; ++k) {
            fills[k] = uint64(f[k]);
        }
        try market.settleDeviations(interval, book, fills, over ? _totals(seed) : bytes("")) {
            if (!valid) tamperedAccepted = true;
            ++deviationCount;
            if (st.tradeCount != 0) ++deviationsAfterTrades;
        } catch {
            if (valid) validRejected = true;
        }
    }

    // ---------------------------------------------------------------- views for the invariants

    function intervalCount() external view returns (uint256) {
        return intervals.length;
    }

    function bookOf(uint64 interval) external view returns (GridMarket.BookOrder[] memory) {
        return books[interval];
    }

    function fillsOf(uint64 interval) external view returns (uint256[] memory) {
        return ghostFills[interval];
    }

    // ---------------------------------------------------------------- helpers

    function _track(uint64 interval) internal {
        if (!known[interval]) {
            known[interval] = true;
            intervals.push(interval);
        }
    }

    function _pick(uint8 pick) internal returns (uint64 interval) {
        if (intervals.length == 0 || pick % 5 == 0) {
            interval = market.currentInterval();
            _track(interval);
        } else {
            interval = intervals[pick % intervals.length];
        }
    }

    /// Write the battery's band for a current or future interval; false when it has none.
    function _ensureBand(uint64 interval) internal returns (bool) {
        if (cap.hasBand(1, interval)) return true;
        if (interval < cap.currentInterval()) return false;
        uint32[] memory ids = new uint32[](1);
        int64[] memory lo = new int64[](1);
        int64[] memory hi = new int64[](1);
        (ids[0], lo[0], hi[0]) = (1, -100_000, 100_000);
        vm.prank(oracle);
        cap.writeBands(interval, bytes32(0), ids, lo, hi);
        return true;
    }

    /// Meter totals of the battery (device 1) and the members (devices 2..5), -5..5 kWh.
    function _totals(uint256 seed) internal pure returns (bytes memory out) {
        for (uint256 d = 1; d <= 5; ++d) {
            int64 wh = int64(boundInt(int256(uint256(keccak256(abi.encode(seed, d)))), -5_000, 5_000));
            out = bytes.concat(out, abi.encodePacked(uint32(d), wh));
        }
    }

    /// Up to 8 trades that respect every rule: sides, limits, energy left, distinct parties.
    function _validTrades(GridMarket.BookOrder[] memory book, uint256 seed)
        internal
        view
        returns (GridMarket.Trade[] memory t, uint64 clearing, int64 power, uint256[] memory fills)
    {
        clearing = uint64(bound(seed, market.minPriceMicroEurPerKwh(), market.maxPriceMicroEurPerKwh()));
        fills = new uint256[](book.length);
        t = new GridMarket.Trade[](8);
        uint256 n = 0;
        int256 batterySold = 0;
        for (uint256 i = 0; i < 8; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            (uint32 b, uint32 s) = _parties(book, r, clearing);
            if (b == GRID && s == GRID) continue;
            uint256 e = bound(r >> 128, 1, 2_000);
            if (b != GRID && b != BATT) e = _min(e, book[b].energyWh - fills[b]);
            if (s != GRID && s != BATT) e = _min(e, book[s].energyWh - fills[s]);
            if (e == 0) continue;
            if (b != GRID && b != BATT) fills[b] += e;
            if (s != GRID && s != BATT) fills[s] += e;
            if (s == BATT) batterySold += int256(e);
            if (b == BATT) batterySold -= int256(e);
            t[n++] = GridMarket.Trade(b, s, uint64(e));
        }
        assembly ("memory-safe") {
            mstore(t, n)
        }
        power = int64(-batterySold * 4); // 4 W x 900 s = 1 Wh
    }

    /// A random buyer/seller pair that may trade (GRID/GRID when none is found).
    function _parties(GridMarket.BookOrder[] memory book, uint256 r, uint64 clearing)
        internal
        view
        returns (uint32 b, uint32 s)
    {
        uint256 kind = r % 4;
        uint32 buy = _find(book, r >> 8, 0, kind == 1 ? market.retailTariffMicroEurPerKwh() : clearing);
        uint32 sell = _find(book, r >> 40, 1, kind == 2 ? market.feedInTariffMicroEurPerKwh() : clearing);
        if (kind == 0 && buy != GRID && sell != GRID && book[buy].prosumer != book[sell].prosumer) return (buy, sell);
        if (kind == 1 && buy != GRID) return (buy, GRID);
        if (kind == 2 && sell != GRID) return (GRID, sell);
        if (kind == 3) return buy != GRID ? (buy, BATT) : (sell != GRID ? (BATT, sell) : (GRID, GRID));
        return (GRID, GRID);
    }

    /// The first order from a random start on `side` whose limit accepts `price` (GRID if none).
    function _find(GridMarket.BookOrder[] memory book, uint256 start, uint8 side, uint64 price)
        internal
        pure
        returns (uint32)
    {
        for (uint256 j = 0; j < book.length; ++j) {
            uint256 k = (start + j) % book.length;
            GridMarket.BookOrder memory o = book[k];
            if (o.side != side) continue;
            if (side == 0 ? o.priceMicroEurPerKwh >= price : o.priceMicroEurPerKwh <= price) return uint32(k);
        }
        return GRID;
    }

    function _tamper(
        uint256 mode,
        GridMarket.BookOrder[] memory book,
        GridMarket.Trade[] memory t,
        uint64 clearing,
        int64 power,
        uint256[] memory fills
    ) internal view returns (GridMarket.BookOrder[] memory, GridMarket.Trade[] memory, uint64, int64, bool) {
        if (mode == 4) return (book, t, clearing, power - 8, false);
        if (mode == 5 && book.length > 0) {
            GridMarket.BookOrder[] memory altered = new GridMarket.BookOrder[](book.length);
            for (uint256 k = 0; k < book.length; ++k) {
                altered[k] = book[k];
            }
            altered[0].energyWh += 1;
            return (altered, t, clearing, power, false);
        }
        if (t.length == 0 || mode == 0 || mode == 5) return (book, t, clearing, power, true);
        GridMarket.Trade memory first = t[0];
        uint32 ref = first.buyOrder < BATT ? first.buyOrder : first.sellOrder;
        if (mode == 1) {
            t[0].buyOrder = uint32(book.length); // no placed order has this index
            return (book, t, clearing, power, false);
        }
        if (mode == 2) {
            t[0].energyWh += uint64(book[ref].energyWh - fills[ref]) + 1; // one Wh beyond the order
            return (book, t, clearing, power, false);
        }
        return _reprice(book, t, clearing, power);
    }

    /// Move the clearing price just beyond the limit of the first member trade at the clearing
    /// price (a buyer's limit + 1 or a seller's - 1), when the bounds allow.
    function _reprice(GridMarket.BookOrder[] memory book, GridMarket.Trade[] memory t, uint64 clearing, int64 power)
        internal
        view
        returns (GridMarket.BookOrder[] memory, GridMarket.Trade[] memory, uint64, int64, bool)
    {
        for (uint256 i = 0; i < t.length; ++i) {
            if (t[i].buyOrder == GRID || t[i].sellOrder == GRID) continue; // at a tariff
            if (t[i].buyOrder < BATT) {
                uint64 limit = book[t[i].buyOrder].priceMicroEurPerKwh;
                if (limit < market.maxPriceMicroEurPerKwh()) return (book, t, limit + 1, power, false);
            }
            if (t[i].sellOrder < BATT) {
                uint64 limit = book[t[i].sellOrder].priceMicroEurPerKwh;
                if (limit > market.minPriceMicroEurPerKwh()) return (book, t, limit - 1, power, false);
            }
        }
        return (book, t, clearing, power, true);
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}

/// @notice The market's invariants under random orders, settlements and deviations.
contract MarketInvariantTest is TestBase {
    GridCapacity internal cap;
    GridMarket internal market;
    MarketHandler internal handler;
    address internal constant BATTERY = address(0xBA77);
    address internal constant ORACLE = address(0x0AC1E);

    function setUp() public {
        vm.warp(1_800_000_000);
        cap = new GridCapacity(address(this), 1 days, 900, 3600, 8);
        market = new GridMarket(
            address(this),
            1 days,
            IGridCapacity(address(cap)),
            1,
            BATTERY,
            GridMarket.Tariffs(300_000, 80_000, 350_000, 60_000),
            GridMarket.OrderBounds(50_000, 400_000, 1_000_000)
        );
        cap.registerDevice(1, 1, GridCapacity.Kind.CommunityBattery, BATTERY, address(3), -100_000, 100_000);
        handler = new MarketHandler(cap, market, ORACLE, BATTERY);
        cap.grantRole(cap.ORACLE_ROLE(), ORACLE);
        market.grantRole(market.SETTLER_ROLE(), address(handler));
        for (uint256 i = 0; i < 4; ++i) {
            cap.registerDevice(uint32(2 + i), 2, GridCapacity.Kind.Other, address(1), address(3), -50_000, 50_000);
            market.registerProsumer(handler.members(i), uint32(2 + i));
        }
    }

    /// forge reads this (forge-std's StdInvariant API): fuzz only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// A target's selectors as forge-std's StdInvariant declares them.
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    /// forge reads this too: the handler's actions, not its end-of-run `settleAllDeviations`.
    function targetSelectors() public view returns (FuzzSelector[] memory targets) {
        bytes4[] memory selectors = new bytes4[](4);
        selectors[0] = MarketHandler.warp.selector;
        selectors[1] = MarketHandler.placeOrder.selector;
        selectors[2] = MarketHandler.settle.selector;
        selectors[3] = MarketHandler.settleDeviations.selector;
        targets = new FuzzSelector[](1);
        targets[0] = FuzzSelector(address(handler), selectors);
    }

    /// Money moves between members, except what the grid pays or charges (trades and deviations).
    function invariant_balancesSumToGridExchange() public view {
        int256 sum = market.balanceOf(BATTERY);
        for (uint256 i = 0; i < 4; ++i) {
            sum += market.balanceOf(handler.members(i));
        }
        assertEq(sum, market.gridExchangeNanoEur(), "members' balances moved other than by the grid");
    }

    /// No order is filled above its energy, and the contract's fills are the handler's.
    function invariant_noOrderFilledAboveItsEnergy() public view {
        uint256 count = handler.intervalCount();
        for (uint256 w = 0; w < count; ++w) {
            uint64 interval = handler.intervals(w);
            GridMarket.IntervalState memory st = market.intervalState(interval);
            if (!st.settled) continue;
            GridMarket.BookOrder[] memory book = handler.bookOf(interval);
            uint256[] memory fills = handler.fillsOf(interval);
            assertEq(st.fillsHash, keccak256(abi.encodePacked(fills)), "fills differ from the contract's");
            for (uint256 k = 0; k < book.length; ++k) {
                assertTrue(fills[k] <= book[k].energyWh, "order filled above its energy");
            }
        }
    }

    /// After each run: settle every remaining interval's deviations, then the invariants hold
    /// again, and the run did settle deviations.
    function afterInvariant() public {
        handler.settleAllDeviations();
        require(handler.deviationCount() > 0, "no deviation settlement in this run");
        invariant_balancesSumToGridExchange();
        invariant_noOrderFilledAboveItsEnergy();
        invariant_onlyValidSettlementsAccepted();
        for (uint256 w = 0; w < handler.intervalCount(); ++w) {
            require(market.intervalState(handler.intervals(w)).deviationsSettled, "an interval left unsettled");
        }
    }

    function invariant_onlyValidSettlementsAccepted() public view {
        assertTrue(!handler.tamperedAccepted(), "a tampered settlement was accepted");
        assertTrue(!handler.validRejected(), "a valid settlement was rejected");
        assertTrue(!handler.secondSettlementAccepted(), "an interval settled twice");
    }
}
