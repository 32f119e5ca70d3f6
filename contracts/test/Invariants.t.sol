// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {GridCapacity} from "../src/GridCapacity.sol";
import {GridMarket, IGridCapacityBands} from "../src/GridMarket.sol";
import {TestBase} from "./TestBase.sol";

// ====================================================================== capacity

/// @notice Random oracle writes (valid and invalid) against a ghost model of the bands.
contract CapacityHandler is TestBase {
    GridCapacity public immutable cap;
    uint32[4] public ids = [uint32(11), 12, 13, 14];
    int64[4] public ratedLo = [int64(-50_000), 0, -3_000, -(int64(1) << 62)];
    int64[4] public ratedHi = [int64(50_000), 22_000, 3_000, int64(1) << 62];

    uint64[] public writtenIntervals;
    mapping(uint64 => mapping(uint32 => bool)) public ghostHas;
    mapping(uint64 => mapping(uint32 => int64)) public ghostLo;
    mapping(uint64 => mapping(uint32 => int64)) public ghostHi;
    bool public acceptedInvalid;
    bool public rejectedValid;
    uint256 public accepted;
    uint256 public rejected;

    constructor(GridCapacity cap_) {
        cap = cap_;
    }

    /// Write bands for a random subset of devices at last + step (step 0 = a rewrite).
    function writeBands(uint8 step, uint256 seed, uint8 subset) external {
        uint64 last = cap.lastInterval();
        uint64 interval = cap.anyIntervalWritten() ? last + uint64(bound(step, 0, 3)) : uint64(bound(step, 0, 3));
        bool valid = !cap.anyIntervalWritten() || interval > last;
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
            uint256 r = uint256(keccak256(abi.encode(seed, d)));
            // mostly inside the rated range, sometimes up to 10% beyond either end
            int256 span = int256(ratedHi[d]) - int256(ratedLo[d]);
            int256 a = boundInt(int256(r), int256(ratedLo[d]) - span / 10, int256(ratedHi[d]) + span / 10);
            int256 b = boundInt(int256(r >> 128), int256(ratedLo[d]) - span / 10, int256(ratedHi[d]) + span / 10);
            if (r % 7 != 0 && a > b) (a, b) = (b, a); // 1 in 7 keeps a possible lo > hi
            devs[k] = ids[d];
            los[k] = int64(a);
            his[k] = int64(b);
            valid = valid && a <= b && a >= ratedLo[d] && b <= ratedHi[d];
            ++k;
        }
        try cap.writeBands(interval, keccak256(abi.encode(seed)), devs, los, his) {
            ++accepted;
            if (!valid) acceptedInvalid = true;
            writtenIntervals.push(interval);
            for (uint256 i = 0; i < n; ++i) {
                ghostHas[interval][devs[i]] = true;
                ghostLo[interval][devs[i]] = los[i];
                ghostHi[interval][devs[i]] = his[i];
            }
        } catch {
            ++rejected;
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
        cap = new GridCapacity(address(this), 900, 3600);
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

    /// Writes are accepted exactly when valid; intervals strictly increase.
    function invariant_acceptsExactlyValidWritesMonotonically() public view {
        assertTrue(!handler.acceptedInvalid(), "an invalid write was accepted");
        assertTrue(!handler.rejectedValid(), "a valid write was rejected");
        uint256 count = handler.writtenCount();
        for (uint256 w = 1; w < count; ++w) {
            assertTrue(handler.writtenIntervals(w) > handler.writtenIntervals(w - 1), "not monotonic");
        }
        if (count > 0) assertEq(uint256(cap.lastInterval()), uint256(handler.writtenIntervals(count - 1)), "last");
    }
}

// ====================================================================== market

/// @notice Random settlements (valid and tampered), orders and shares against GridMarket.
contract MarketHandler is TestBase {
    GridCapacity public immutable cap;
    GridMarket public immutable market;
    address public immutable battery;
    address[4] public members;
    uint256[4] internal keys = [uint256(0xA1), 0xA2, 0xA3, 0xA4];
    uint64 public nextInterval = 1;
    uint256 public settledCount;
    bool public tamperedAccepted;
    bool public doubleSettleAccepted;
    bool public validRejected;

    constructor(GridCapacity cap_, GridMarket market_, address battery_) {
        cap = cap_;
        market = market_;
        battery = battery_;
        for (uint256 i = 0; i < 4; ++i) {
            members[i] = vm.addr(keys[i]);
        }
    }

    function _party(uint256 r) internal view returns (address) {
        uint256 k = r % 6;
        if (k < 4) return members[k];
        return k == 4 ? battery : address(0);
    }

    /// Random trades that follow every settlement rule, and the matching battery power.
    function _trades(uint256 seed, uint256 n, uint64 clearing)
        internal
        view
        returns (GridMarket.Trade[] memory t, int64 power)
    {
        t = new GridMarket.Trade[](n);
        int256 batterySold = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            address buyer = _party(r);
            address seller = _party(r >> 8);
            if (buyer == seller) seller = buyer == members[0] ? members[1] : members[0];
            uint64 energy = uint64(bound(r >> 64, 1, 2_000));
            uint64 price = seller == address(0)
                ? market.retailTariffMicroEurPerKwh()
                : (buyer == address(0) ? market.feedInTariffMicroEurPerKwh() : clearing);
            t[i] = GridMarket.Trade(buyer, seller, energy, price);
            if (seller == battery) batterySold += int256(uint256(energy));
            if (buyer == battery) batterySold -= int256(uint256(energy));
        }
        power = int64(-batterySold * 3600 / int256(uint256(market.intervalSeconds())));
    }

    function _writeBatteryBand(uint64 interval) internal {
        uint32[] memory ids = new uint32[](1);
        int64[] memory lo = new int64[](1);
        int64[] memory hi = new int64[](1);
        ids[0] = 1;
        lo[0] = -100_000;
        hi[0] = 100_000;
        cap.writeBands(interval, bytes32(0), ids, lo, hi);
    }

    /// Settle a fresh interval with random trades; `tamper` % 4 != 0 breaks one rule.
    function settle(uint256 seed, uint8 countSeed, uint64 clearingSeed, uint8 tamper) external {
        uint256 n = bound(countSeed, 0, 10);
        uint64 clearing = uint64(bound(clearingSeed, market.minPriceMicroEurPerKwh(), market.maxPriceMicroEurPerKwh()));
        (GridMarket.Trade[] memory t, int64 power) = _trades(seed, n, clearing);
        uint64 interval = nextInterval++;
        _writeBatteryBand(interval);
        uint256 mode = tamper % 4; // 0: valid; 1: battery power off by 2 Wh; 2: price; 3: unknown party
        if (mode == 1) power -= 8; // 8 W * 900 s = 2 Wh
        if (mode == 2 && n > 0) t[0].priceMicroEurPerKwh += 1;
        if (mode == 3 && n > 0) t[0].buyer = address(0xBEEF);
        bool valid = mode == 0 || (n == 0 && mode != 1);
        _settle(interval, bytes32(seed), clearing, power, t, valid);
    }

    function _settle(
        uint64 interval,
        bytes32 root,
        uint64 clearing,
        int64 power,
        GridMarket.Trade[] memory t,
        bool valid
    ) internal {
        try market.settle(interval, root, clearing, power, t) {
            if (!valid) tamperedAccepted = true;
            ++settledCount;
            try market.settle(interval, root, clearing, power, t) {
                doubleSettleAccepted = true;
            } catch {}
        } catch {
            if (valid) validRejected = true;
        }
    }

    /// A member sets its battery share (may exceed the whole battery: then it must revert).
    function setShare(uint8 who, uint16 bps) external {
        try market.setBatteryShare(members[who % 4], uint16(bound(bps, 0, 10_000))) {} catch {}
    }

    /// A member places a signed order for an open interval.
    function placeOrder(uint8 who, uint64 energySeed) external {
        uint256 i = who % 4;
        GridMarket.Order memory o = GridMarket.Order({
            prosumer: members[i],
            interval: nextInterval,
            side: uint8(energySeed % 2),
            energyWh: uint64(bound(energySeed, 1, 5_000)),
            priceMicroEurPerKwh: market.minPriceMicroEurPerKwh(),
            nonce: market.nonceOf(members[i]),
            deadline: uint64(block.timestamp + 60)
        });
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[i], market.hashOrder(o));
        market.submitOrderSigned(o, abi.encodePacked(r, s, v));
    }
}

/// @notice The market's balance invariant: balances change in sum only by the grid exchange.
contract MarketInvariantTest is TestBase {
    GridCapacity internal cap;
    GridMarket internal market;
    MarketHandler internal handler;
    address internal constant BATTERY = address(0xBA77);

    function setUp() public {
        vm.warp(1_800_000_000);
        cap = new GridCapacity(address(this), 900, 3600);
        market = new GridMarket(address(this), IGridCapacityBands(address(cap)), 1, BATTERY, 300_000, 80_000, 50_000, 400_000);
        cap.registerDevice(1, 1, GridCapacity.Kind.CommunityBattery, BATTERY, address(3), -100_000, 100_000);
        handler = new MarketHandler(cap, market, BATTERY);
        cap.grantRole(cap.ORACLE_ROLE(), address(handler));
        market.grantRole(market.SETTLER_ROLE(), address(handler));
        market.grantRole(market.COMMUNITY_ADMIN_ROLE(), address(handler));
        for (uint256 i = 0; i < 4; ++i) {
            market.registerProsumer(handler.members(i));
        }
    }

    /// forge reads this (forge-std's StdInvariant API): fuzz only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_balancesSumToGridExchange() public view {
        int256 sum = market.balanceOf(BATTERY);
        for (uint256 i = 0; i < 4; ++i) {
            sum += market.balanceOf(handler.members(i));
        }
        assertEq(sum, market.gridExchangeNanoEur(), "members' balances moved other than by the grid");
    }

    function invariant_settlementRulesHold() public view {
        assertTrue(!handler.tamperedAccepted(), "a tampered settlement was accepted");
        assertTrue(!handler.doubleSettleAccepted(), "an interval settled twice");
        assertTrue(!handler.validRejected(), "a valid settlement was rejected");
    }

    function invariant_sharesWithinWholeBattery() public view {
        uint256 sum = 0;
        for (uint256 i = 0; i < 4; ++i) {
            sum += market.shareBpsOf(handler.members(i));
        }
        assertEq(sum, market.totalShareBps(), "total share");
        assertTrue(sum <= 10_000, "shares exceed the battery");
    }
}
