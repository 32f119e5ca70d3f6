// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {GridCapacity} from "../src/GridCapacity.sol";
import {GridMarket, IGridCapacityBands} from "../src/GridMarket.sol";
import {TestBase} from "./TestBase.sol";

/// @notice Shared deployment: capacity with the battery (device 1), market, three prosumers.
abstract contract MarketFixture is TestBase {
    GridCapacity internal cap;
    GridMarket internal market;
    address internal constant DSO = address(0xD50);
    address internal constant ORACLE = address(0x0AC1E);
    address internal constant SETTLER = address(0x5E771E);
    address internal constant BATTERY = address(0xBA77);
    address internal constant STRANGER = address(0xBAD);
    uint64 internal constant RETAIL = 300_000;
    uint64 internal constant FEED_IN = 80_000;
    uint64 internal constant MIN_PRICE = 50_000;
    uint64 internal constant MAX_PRICE = 400_000;
    uint64 internal constant INTERVAL_S = 900;
    int64 internal constant BATTERY_RATED_W = 100_000;
    uint256[3] internal keys = [uint256(0xA11CE), uint256(0xB0B), uint256(0xCA401)];
    address[3] internal members;

    function _deploy() internal {
        vm.warp(1_800_000_000);
        cap = new GridCapacity(DSO, INTERVAL_S, 3600);
        market = new GridMarket(
            DSO, IGridCapacityBands(address(cap)), 1, BATTERY, RETAIL, FEED_IN, MIN_PRICE, MAX_PRICE
        );
        vm.startPrank(DSO);
        cap.grantRole(cap.ORACLE_ROLE(), ORACLE);
        cap.registerDevice(
            1, 1, GridCapacity.Kind.CommunityBattery, BATTERY, address(0x3E7E2), -BATTERY_RATED_W, BATTERY_RATED_W
        );
        market.grantRole(market.SETTLER_ROLE(), SETTLER);
        for (uint256 i = 0; i < 3; ++i) {
            members[i] = vm.addr(keys[i]);
            market.registerProsumer(members[i]);
        }
        vm.stopPrank();
    }

    function _band(uint64 interval, int64 lo, int64 hi) internal {
        uint32[] memory ids = new uint32[](1);
        ids[0] = 1;
        int64[] memory los = new int64[](1);
        los[0] = lo;
        int64[] memory his = new int64[](1);
        his[0] = hi;
        vm.prank(ORACLE);
        cap.writeBands(interval, bytes32(0), ids, los, his);
    }
}

/// @notice Unit and fuzz tests of GridMarket: registry, orders (EIP-712), commitment, settlement.
contract GridMarketTest is MarketFixture {
    function setUp() public {
        _deploy();
    }

    function _order(uint256 who, uint64 interval) internal view returns (GridMarket.Order memory o) {
        o = GridMarket.Order({
            prosumer: members[who],
            interval: interval,
            side: 1,
            energyWh: 1_000,
            priceMicroEurPerKwh: 120_000,
            nonce: market.nonceOf(members[who]),
            deadline: uint64(block.timestamp + 600)
        });
    }

    function _sign(uint256 key, GridMarket.Order memory o) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, market.hashOrder(o));
        return abi.encodePacked(r, s, v);
    }

    function _trade(address buyer, address seller, uint64 energyWh, uint64 price)
        internal
        pure
        returns (GridMarket.Trade memory)
    {
        return GridMarket.Trade({buyer: buyer, seller: seller, energyWh: energyWh, priceMicroEurPerKwh: price});
    }

    // ---------------------------------------------------------------- registry

    function test_registryRolesAndShares() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, market.COMMUNITY_ADMIN_ROLE()
            )
        );
        vm.prank(STRANGER);
        market.registerProsumer(STRANGER);
        vm.startPrank(DSO);
        market.setBatteryShare(members[0], 6_000);
        market.setBatteryShare(members[1], 4_000);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.SharesExceeded.selector, uint256(10_001)));
        market.setBatteryShare(members[2], 1);
        market.setBatteryShare(members[1], 3_000); // lowering frees room
        market.setBatteryShare(members[2], 1_000);
        market.removeProsumer(members[0]); // its share is released
        vm.stopPrank();
        assertEq(uint256(market.totalShareBps()), 4_000, "total after removal");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.ReservedAccount.selector, BATTERY));
        vm.prank(DSO);
        market.registerProsumer(BATTERY);
    }

    function testFuzz_sharesNeverExceedWholeBattery(uint16 a, uint16 b, uint16 c) public {
        uint16[3] memory want = [a, b, c];
        vm.startPrank(DSO);
        for (uint256 i = 0; i < 3; ++i) {
            uint256 total = uint256(market.totalShareBps()) - market.shareBpsOf(members[i]) + want[i];
            if (total > 10_000) {
                vm.expectRevert(abi.encodeWithSelector(GridMarket.SharesExceeded.selector, total));
            }
            market.setBatteryShare(members[i], want[i]);
        }
        vm.stopPrank();
        uint256 sum = uint256(market.shareBpsOf(members[0])) + market.shareBpsOf(members[1])
            + market.shareBpsOf(members[2]);
        assertEq(sum, market.totalShareBps(), "total tracks shares");
        assertTrue(sum <= 10_000, "shares <= 10000 bps");
    }

    // ---------------------------------------------------------------- orders

    function test_signedOrderRelayedThenReplayed() public {
        GridMarket.Order memory o = _order(0, 50);
        bytes memory sig = _sign(keys[0], o);
        vm.prank(STRANGER); // anyone relays
        bytes32 digest = market.submitOrderSigned(o, sig);
        assertEq(digest, market.hashOrder(o), "digest");
        assertEq(uint256(market.nonceOf(members[0])), 1, "nonce advanced");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadNonce.selector, members[0], uint64(1), uint64(0)));
        market.submitOrderSigned(o, sig);
    }

    function test_forgedExpiredAndMalformedOrdersRevert() public {
        GridMarket.Order memory o = _order(0, 50);
        bytes memory sig = _sign(keys[1], o); // signed by another member
        vm.expectRevert(GridMarket.BadSignature.selector);
        market.submitOrderSigned(o, sig);
        vm.expectRevert(GridMarket.BadSignature.selector);
        market.submitOrderSigned(o, hex"1234");
        o.deadline = uint64(block.timestamp - 1);
        sig = _sign(keys[0], o);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.Expired.selector, o.deadline, block.timestamp));
        market.submitOrderSigned(o, sig);
        o = _order(0, 50);
        o.priceMicroEurPerKwh = MAX_PRICE + 1;
        sig = _sign(keys[0], o);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.PriceOutOfBounds.selector, MAX_PRICE + 1, MIN_PRICE, MAX_PRICE)
        );
        market.submitOrderSigned(o, sig);
        o = _order(0, 50);
        o.energyWh = 0;
        sig = _sign(keys[0], o);
        vm.expectRevert(GridMarket.ZeroEnergy.selector);
        market.submitOrderSigned(o, sig);
        assertEq(uint256(market.nonceOf(members[0])), 0, "no nonce consumed by rejected orders");
    }

    function test_ownOrderOnlyByTheProsumer() public {
        GridMarket.Order memory o = _order(1, 50);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NotOrderOwner.selector, STRANGER, members[1]));
        vm.prank(STRANGER);
        market.submitOrder(o);
        vm.prank(members[1]);
        market.submitOrder(o);
        o.prosumer = STRANGER;
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NotProsumer.selector, STRANGER));
        vm.prank(STRANGER);
        market.submitOrder(o);
    }

    function test_committedIntervalTakesNoOrders() public {
        vm.prank(SETTLER);
        market.commitOrders(50, keccak256("root"));
        GridMarket.Order memory o = _order(0, 50);
        bytes memory sig = _sign(keys[0], o);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.IntervalClosed.selector, uint64(50)));
        market.submitOrderSigned(o, sig);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.AlreadyCommitted.selector, uint64(50)));
        vm.prank(SETTLER);
        market.commitOrders(50, keccak256("root"));
    }

    // ---------------------------------------------------------------- settlement

    function _validTrades() internal view returns (GridMarket.Trade[] memory t, int64 batteryPowerW) {
        t = new GridMarket.Trade[](4);
        t[0] = _trade(members[0], members[1], 500, 150_000); // member to member
        t[1] = _trade(members[2], BATTERY, 250, 150_000); // battery sells 250 Wh
        t[2] = _trade(members[0], address(0), 100, RETAIL); // grid sells
        t[3] = _trade(address(0), members[1], 40, FEED_IN); // grid buys
        batteryPowerW = -1_000; // -1000 W * 900 s / 3600 = -250 Wh: discharging 250 Wh
    }

    function test_settleHappyPathBooksBalances() public {
        _band(60, -2_000, 2_000);
        (GridMarket.Trade[] memory t, int64 p) = _validTrades();
        vm.prank(SETTLER);
        market.settle(60, keccak256("root"), 150_000, p, t);
        assertEq(market.balanceOf(members[0]), -int256(uint256(500 * 150_000 + 100 * RETAIL)), "buyer 0");
        assertEq(market.balanceOf(members[1]), int256(uint256(500 * 150_000 + 40 * FEED_IN)), "seller 1");
        assertEq(market.balanceOf(BATTERY), int256(250 * 150_000), "battery");
        assertEq(market.gridExchangeNanoEur(), int256(uint256(40 * FEED_IN)) - int256(uint256(100 * RETAIL)), "grid");
        GridMarket.IntervalState memory st = market.intervalState(60);
        assertTrue(st.settled && st.committed && st.ordersRoot == keccak256("root"), "state");
    }

    function test_settleRejections() public {
        _band(60, -2_000, 2_000);
        (GridMarket.Trade[] memory t, int64 p) = _validTrades();
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, market.SETTLER_ROLE()
            )
        );
        vm.prank(STRANGER);
        market.settle(60, 0, 150_000, p, t);

        vm.startPrank(SETTLER);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.EnergyImbalance.selector, int256(250), int64(-1_008), INTERVAL_S));
        market.settle(60, 0, 150_000, -1_008, t); // 252 Wh: off by 2 Wh
        market.settle(60, 0, 150_000, -1_004, t); // 251 Wh: within 1 Wh
        vm.expectRevert(abi.encodeWithSelector(GridMarket.AlreadySettled.selector, uint64(60)));
        market.settle(60, 0, 150_000, p, t);

        vm.stopPrank();
        _band(61, 0, 2_000);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.BatteryOutsideBand.selector, int64(-1_000), int64(0), int64(2_000))
        );
        vm.prank(SETTLER);
        market.settle(61, 0, 150_000, p, t);

        vm.expectRevert(abi.encodeWithSelector(GridCapacity.NoBand.selector, uint32(1), uint64(62)));
        vm.prank(SETTLER);
        market.settle(62, 0, 150_000, p, t);

        _band(63, -2_000, 2_000);
        t[2].priceMicroEurPerKwh = 150_000; // grid trade not at the retail tariff
        vm.expectRevert(abi.encodeWithSelector(GridMarket.PriceMismatch.selector, uint256(2), RETAIL, uint64(150_000)));
        vm.prank(SETTLER);
        market.settle(63, 0, 150_000, p, t);
        t[2].priceMicroEurPerKwh = RETAIL;
        t[0].priceMicroEurPerKwh = 149_999; // member trade not at the clearing price
        vm.expectRevert(abi.encodeWithSelector(GridMarket.PriceMismatch.selector, uint256(0), uint64(150_000), uint64(149_999)));
        vm.prank(SETTLER);
        market.settle(63, 0, 150_000, p, t);
        t[0].priceMicroEurPerKwh = 150_000;
        t[0].seller = STRANGER;
        vm.expectRevert(abi.encodeWithSelector(GridMarket.UnknownParty.selector, STRANGER));
        vm.prank(SETTLER);
        market.settle(63, 0, 150_000, p, t);
    }

    function test_settleMustMatchCommittedRoot() public {
        _band(70, -2_000, 2_000);
        vm.prank(SETTLER);
        market.commitOrders(70, keccak256("a"));
        (GridMarket.Trade[] memory t, int64 p) = _validTrades();
        vm.expectRevert(abi.encodeWithSelector(GridMarket.RootMismatch.selector, keccak256("a"), keccak256("b")));
        vm.prank(SETTLER);
        market.settle(70, keccak256("b"), 150_000, p, t);
    }

    /// Random trades: members' balances change in sum exactly by the grid exchange.
    function testFuzz_balancesChangeOnlyByGridExchange(uint256 seed, uint8 countSeed, uint64 clearingSeed) public {
        uint256 n = bound(countSeed, 1, 12);
        uint64 clearing = uint64(bound(clearingSeed, MIN_PRICE, MAX_PRICE));
        address[5] memory parties = [members[0], members[1], members[2], BATTERY, address(0)];
        GridMarket.Trade[] memory t = new GridMarket.Trade[](n);
        int256 batterySold = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            address buyer = parties[r % 5];
            address seller = parties[(r / 5) % 5];
            if (buyer == seller) seller = buyer == members[0] ? members[1] : members[0];
            uint64 energy = uint64(bound(r >> 64, 1, 2_000)); // |battery| <= 12 * 2 kWh: inside its band
            uint64 price = seller == address(0) ? RETAIL : (buyer == address(0) ? FEED_IN : clearing);
            t[i] = _trade(buyer, seller, energy, price);
            if (seller == BATTERY) batterySold += int256(uint256(energy));
            if (buyer == BATTERY) batterySold -= int256(uint256(energy));
        }
        int64 power = int64(-batterySold * 3600 / int256(uint256(INTERVAL_S)));
        _band(80, -BATTERY_RATED_W, BATTERY_RATED_W);
        vm.prank(SETTLER);
        market.settle(80, 0, clearing, power, t);
        int256 sum = market.balanceOf(BATTERY);
        for (uint256 i = 0; i < 3; ++i) {
            sum += market.balanceOf(members[i]);
        }
        assertEq(sum, market.gridExchangeNanoEur(), "sum of balances == grid exchange");
    }
}
