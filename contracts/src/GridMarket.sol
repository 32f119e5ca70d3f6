// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @notice The part of GridCapacity the market reads.
interface IGridCapacity {
    /// @notice The band of a device in an interval (reverts NoBand if none).
    function bandOf(uint32 deviceId, uint64 interval)
        external
        view
        returns (int64 pMinW, int64 pMaxW, uint64 updatedAt);

    /// @notice Interval length in seconds.
    function intervalSeconds() external view returns (uint64);

    /// @notice Intervals after the current one that bands and orders may target.
    function maxIntervalsAhead() external view returns (uint64);

    /// @notice Whether a device id is registered.
    function isRegistered(uint32 deviceId) external view returns (bool);

    /// @notice keccak256 of an interval's meter totals (0: not written).
    function meterTotalsHash(uint64 interval) external view returns (bytes32);

    /// @notice Whether `account` holds `role` on the capacity contract.
    function hasRole(bytes32 role, address account) external view returns (bool);
}

/// @title GridMarket: members, EIP-712 orders, settlement bound to the placed orders, and the
/// settlement of metered deviations
/// @notice Units (see docs/interfaces.md): energy Wh (uint64; metered and traded nets int64,
/// consumption / bought positive), power W (int64, battery charging positive), price micro-euro
/// per kWh (= nano-euro per Wh, uint64), money nano-euro (int128 per member, int256 in sums;
/// 1 euro-cent = 1e7 nano-euro). A payment is exactly energyWh * priceMicroEurPerKwh nano-euro.
/// @dev Roles: DEFAULT_ADMIN_ROLE = the DSO (tariffs, role admin, unpause; handed over in two
/// steps with a delay); COMMUNITY_ADMIN_ROLE registers members and battery shares; SETTLER_ROLE
/// commits and settles intervals; PAUSER_ROLE pauses orders and settlements. The settler may hold
/// no other role here and not the capacity contract's ORACLE_ROLE (`RoleConflict`).
/// The contract keeps, per interval, a hash chain over the placed orders (`bookHash`): a
/// settlement names the whole book, which must hash to it, and every trade names the orders it
/// fills, so no trade can be invented, enlarged or re-priced (docs/contracts.md, "Settlement").
contract GridMarket is AccessControlDefaultAdminRules, Pausable, EIP712 {
    using SafeCast for int256;

    /// @notice Role that registers members and sets battery shares.
    bytes32 public constant COMMUNITY_ADMIN_ROLE = keccak256("COMMUNITY_ADMIN_ROLE");
    /// @notice Role of the matcher that commits and settles intervals.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Role that may pause the market (the admin unpauses).
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice GridCapacity's oracle role (the settler may not hold it).
    bytes32 public constant CAPACITY_ORACLE_ROLE = keccak256("ORACLE_ROLE");
    /// @notice EIP-712 type hash of `Order`.
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address prosumer,uint64 interval,uint8 side,uint64 energyWh,uint64 priceMicroEurPerKwh,uint64 nonce,uint64 deadline)"
    );
    /// @notice Basis points of a whole battery.
    uint16 public constant BPS = 10_000;
    /// @notice Order side: buy.
    uint8 public constant BUY = 0;
    /// @notice Order side: sell.
    uint8 public constant SELL = 1;
    /// @notice Trade party reference of the grid (address(0)).
    uint32 public constant GRID_REF = type(uint32).max;
    /// @notice Trade party reference of the community battery.
    uint32 public constant BATTERY_REF = type(uint32).max - 1;
    /// @notice Largest maxOrderEnergyWh * maxPrice (nano-euro) a deployment may state (2^96).
    uint256 public constant MAX_ORDER_VALUE_NANO_EUR = uint256(1) << 96;
    /// @notice Most orders one `submitOrdersSigned` call takes (bounds its gas: about 70k each).
    uint256 public constant MAX_ORDERS_PER_BATCH = 200;

    /// @notice A buy (side 0) or sell (side 1) order for one interval.
    struct Order {
        address prosumer;
        uint64 interval;
        uint8 side;
        uint64 energyWh;
        uint64 priceMicroEurPerKwh;
        uint64 nonce;
        uint64 deadline;
    }

    /// @notice An order as the book of a settlement names it (`OrderPlaced` fields, placement order).
    struct BookOrder {
        address prosumer;
        uint8 side;
        uint64 energyWh;
        uint64 priceMicroEurPerKwh;
    }

    /// @notice A trade between two book orders (indices into the settlement's book) or with
    /// GRID_REF / BATTERY_REF. Its price follows from the parties (see `settle`).
    struct Trade {
        uint32 buyOrder;
        uint32 sellOrder;
        uint64 energyWh;
    }

    /// @notice Grid prices in micro-euro per kWh: retail (grid -> member), feed-in (member ->
    /// grid), imbalance buy (a member's metered excess consumption) and imbalance sell (a
    /// member's metered excess injection).
    struct Tariffs {
        uint64 retail;
        uint64 feedIn;
        uint64 imbalanceBuy;
        uint64 imbalanceSell;
    }

    /// @notice Order bounds stated at deployment (price micro-euro per kWh, energy Wh).
    struct OrderBounds {
        uint64 minPrice;
        uint64 maxPrice;
        uint64 maxEnergyWh;
    }

    /// @notice What an account is to the market.
    enum Standing {
        None,
        Prosumer,
        Battery,
        Former
    }

    /// @notice Per-account state, one storage slot. Registration makes the slot non-zero, so
    /// booking a member's first trade rewrites a slot instead of creating one.
    struct Member {
        Standing standing;
        uint16 shareBps;
        uint32 meterDeviceId;
        uint64 nonce;
        int128 balanceNanoEur;
    }

    /// @notice What is stored per interval.
    struct IntervalState {
        bytes32 bookHash;
        bytes32 fillsHash;
        bool committed;
        bool settled;
        bool deviationsSettled;
        uint64 clearingPriceMicroEurPerKwh;
        int64 batteryPowerW;
        int64 batteryBoughtWh;
        uint32 tradeCount;
    }

    /// @notice The capacity contract (bands, device registry, meter totals).
    IGridCapacity public immutable capacity;
    /// @notice Interval length in s, read from the capacity contract at deployment.
    uint64 public immutable intervalSeconds;
    /// @notice Intervals after the current one that orders, commitments and settlements may name.
    uint64 public immutable maxIntervalsAhead;
    /// @notice Capacity-contract device id of the community battery.
    uint32 public immutable batteryDeviceId;
    /// @notice Account under which the community battery trades.
    address public immutable batteryAccount;
    /// @notice Lowest order / clearing price, micro-euro per kWh.
    uint64 public immutable minPriceMicroEurPerKwh;
    /// @notice Highest order / clearing price, micro-euro per kWh.
    uint64 public immutable maxPriceMicroEurPerKwh;
    /// @notice Largest order energy, Wh.
    uint64 public immutable maxOrderEnergyWh;

    Tariffs private _tariffs;
    /// @notice Sum of all battery shares in basis points (<= 10000).
    uint16 public totalShareBps;
    /// @notice Net money the grid paid the community: feed-in and imbalance-sell payments minus
    /// retail and imbalance-buy charges, nano-euro. Invariant: the sum of all balances equals this.
    int256 public gridExchangeNanoEur;
    /// @notice The account whose meter is a capacity device (the battery's included).
    mapping(uint32 deviceId => address) public memberOfDevice;

    mapping(address account => Member) private _members;
    mapping(uint64 interval => IntervalState) private _intervals;

    /// @notice A member joined (or rejoined) with its meter device.
    event ProsumerRegistered(address indexed prosumer, uint32 meterDeviceId);
    /// @notice A member left (its battery share is dropped, its balance stays).
    event ProsumerRemoved(address indexed prosumer);
    /// @notice A member's battery share changed.
    event BatteryShareSet(address indexed member, uint16 shareBps, uint16 totalShareBps);
    /// @notice Tariffs changed (micro-euro per kWh).
    event TariffsSet(uint64 retail, uint64 feedIn, uint64 imbalanceBuy, uint64 imbalanceSell);
    /// @notice An order was accepted; `digest` is its EIP-712 hash.
    event OrderPlaced(
        uint64 indexed interval,
        address indexed prosumer,
        bytes32 digest,
        uint8 side,
        uint64 energyWh,
        uint64 priceMicroEurPerKwh,
        uint64 nonce
    );
    /// @notice An order of a `submitOrdersSigned` batch was not placed; `reason` is the ABI-encoded
    /// custom error `submitOrderSigned` would have reverted with (e.g. BadNonce, Expired).
    event OrderRejected(address indexed prosumer, bytes32 digest, uint64 nonce, bytes reason);
    /// @notice The interval takes no more orders; `bookHash` commits its book.
    event OrdersCommitted(uint64 indexed interval, bytes32 bookHash);
    /// @notice One trade of a settlement (order indices into the book, or GRID_REF/BATTERY_REF).
    event TradeSettled(
        uint64 indexed interval,
        address indexed buyer,
        address indexed seller,
        uint32 buyOrder,
        uint32 sellOrder,
        uint64 energyWh,
        uint64 priceMicroEurPerKwh
    );
    /// @notice An interval's trades were settled.
    event IntervalSettled(
        uint64 indexed interval,
        bytes32 bookHash,
        bytes32 fillsHash,
        uint64 clearingPriceMicroEurPerKwh,
        int64 batteryPowerW,
        uint32 tradeCount
    );
    /// @notice One account's metered energy against its traded energy (Wh, consumption and
    /// bought positive); the deviation `meteredWh - tradedWh` was booked at `priceMicroEurPerKwh`.
    event DeviationSettled(
        uint64 indexed interval,
        address indexed account,
        uint32 deviceId,
        int64 tradedWh,
        int64 meteredWh,
        uint64 priceMicroEurPerKwh
    );
    /// @notice An interval's deviations were settled against the oracle's meter totals.
    event DeviationsSettled(uint64 indexed interval, bytes32 totalsHash, uint32 accounts);

    /// @notice The account is not a registered prosumer.
    error NotProsumer(address account);
    /// @notice The account is already a registered prosumer.
    error AlreadyProsumer(address account);
    /// @notice The order's nonce is not the next expected one.
    error BadNonce(address prosumer, uint64 expected, uint64 got);
    /// @notice The order's deadline has passed.
    error Expired(uint64 deadline, uint256 nowSeconds);
    /// @notice The signature is malformed or not the prosumer's.
    error BadSignature();
    /// @notice A `submitOrdersSigned` batch is empty, longer than MAX_ORDERS_PER_BATCH, or its
    /// orders and signatures differ in number.
    error BadBatch(uint256 orders, uint256 signatures);
    /// @notice The sender of `submitOrder` is not the order's prosumer.
    error NotOrderOwner(address sender, address prosumer);
    /// @notice Zero energy in an order or trade.
    error ZeroEnergy();
    /// @notice Order energy above maxOrderEnergyWh.
    error EnergyOutOfBounds(uint64 energyWh, uint64 maxEnergyWh);
    /// @notice Side other than 0 (buy) or 1 (sell).
    error InvalidSide(uint8 side);
    /// @notice A price outside [minPrice, maxPrice].
    error PriceOutOfBounds(uint64 price, uint64 minPrice, uint64 maxPrice);
    /// @notice The interval is committed or settled and takes no orders.
    error IntervalClosed(uint64 interval);
    /// @notice The interval lies before the current one.
    error IntervalInPast(uint64 interval, uint64 currentInterval);
    /// @notice The interval lies more than maxIntervalsAhead after the current one.
    error IntervalTooFarAhead(uint64 interval, uint64 lastAllowed);
    /// @notice The interval has not ended (deviations are settled after it).
    error IntervalNotOver(uint64 interval, uint64 currentInterval);
    /// @notice The interval is already committed.
    error AlreadyCommitted(uint64 interval);
    /// @notice The interval's trades are already settled.
    error AlreadySettled(uint64 interval);
    /// @notice The interval's deviations are already settled.
    error DeviationsAlreadySettled(uint64 interval);
    /// @notice The book given does not hash to the placed orders' chain.
    error BookMismatch(bytes32 expected, bytes32 given);
    /// @notice The fills given do not hash to the settlement's fills.
    error FillsMismatch(bytes32 expected, bytes32 given);
    /// @notice The meter totals given are not the oracle's.
    error TotalsMismatch(bytes32 expected, bytes32 given);
    /// @notice The oracle has not written the interval's meter totals.
    error NoMeterTotals(uint64 interval);
    /// @notice An account traded but its meter device has no total (or is no longer its own).
    error NoMeterTotal(address account, uint32 deviceId);
    /// @notice The battery power lies outside the battery's band.
    error BatteryOutsideBand(int64 batteryPowerW, int64 pMinW, int64 pMaxW);
    /// @notice The battery's traded energy does not match its power (tolerance 1 Wh).
    error EnergyImbalance(int256 batteryNetSoldWh, int64 batteryPowerW, uint64 intervalSeconds);
    /// @notice A trade names an order index outside the book.
    error UnknownOrder(uint256 tradeIndex, uint32 orderIndex);
    /// @notice A trade uses an order on the wrong side (a sell as buyer or a buy as seller).
    error WrongSide(uint32 orderIndex);
    /// @notice The trade's price is beyond the order's limit.
    error LimitViolated(uint32 orderIndex, uint64 limit, uint64 price);
    /// @notice The trades fill an order beyond its energy.
    error Overfilled(uint32 orderIndex, uint256 filledWh, uint64 energyWh);
    /// @notice A trade party that is neither a member nor the battery.
    error UnknownParty(address account);
    /// @notice A trade whose buyer equals its seller (the grid with itself included).
    error SelfTrade(uint256 tradeIndex);
    /// @notice Battery shares would exceed 10000 basis points.
    error SharesExceeded(uint256 totalShareBps);
    /// @notice Tariffs outside the price bounds.
    error InvalidPrices();
    /// @notice Order bounds with min > max, zero energy or a value above MAX_ORDER_VALUE_NANO_EUR.
    error InvalidBounds();
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice The battery account cannot be registered as a prosumer.
    error ReservedAccount(address account);
    /// @notice The meter device is not registered in the capacity contract.
    error UnknownDevice(uint32 deviceId);
    /// @notice The meter device already belongs to another account.
    error DeviceTaken(uint32 deviceId, address holder);
    /// @notice The account already holds a role that excludes the requested one.
    error RoleConflict(address account, bytes32 heldRole, bytes32 requestedRole);

    /// @notice Deploy the market.
    /// @param admin the DSO (DEFAULT_ADMIN_ROLE, COMMUNITY_ADMIN_ROLE and PAUSER_ROLE)
    /// @param adminDelaySeconds delay of a DEFAULT_ADMIN_ROLE hand-over or renouncement, s
    /// @param capacity_ the GridCapacity contract
    /// @param batteryDeviceId_ capacity device id of the community battery
    /// @param batteryAccount_ account the battery trades under
    /// @param initialTariffs grid prices, micro-euro per kWh (inside the bounds)
    /// @param bounds order price and energy bounds
    constructor(
        address admin,
        uint48 adminDelaySeconds,
        IGridCapacity capacity_,
        uint32 batteryDeviceId_,
        address batteryAccount_,
        Tariffs memory initialTariffs,
        OrderBounds memory bounds
    ) AccessControlDefaultAdminRules(adminDelaySeconds, admin) EIP712("gridshare-market", "1") {
        if (address(capacity_) == address(0) || batteryAccount_ == address(0)) revert ZeroAddress();
        if (
            bounds.minPrice > bounds.maxPrice || bounds.maxEnergyWh == 0
                || uint256(bounds.maxEnergyWh) * bounds.maxPrice > MAX_ORDER_VALUE_NANO_EUR
        ) revert InvalidBounds();
        capacity = capacity_;
        intervalSeconds = capacity_.intervalSeconds();
        maxIntervalsAhead = capacity_.maxIntervalsAhead();
        batteryDeviceId = batteryDeviceId_;
        batteryAccount = batteryAccount_;
        minPriceMicroEurPerKwh = bounds.minPrice;
        maxPriceMicroEurPerKwh = bounds.maxPrice;
        maxOrderEnergyWh = bounds.maxEnergyWh;
        _members[batteryAccount_] = Member(Standing.Battery, 0, batteryDeviceId_, 0, 0);
        memberOfDevice[batteryDeviceId_] = batteryAccount_;
        _grantRole(COMMUNITY_ADMIN_ROLE, admin);
        _grantRole(PAUSER_ROLE, admin);
        _setTariffs(initialTariffs, bounds.minPrice, bounds.maxPrice);
    }

    // ------------------------------------------------------------------ registry

    /// @notice Register a member with the capacity device that meters its connection.
    /// @param prosumer the member's account
    /// @param meterDeviceId a registered capacity device not metering another account
    function registerProsumer(address prosumer, uint32 meterDeviceId) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        if (prosumer == address(0)) revert ZeroAddress();
        if (prosumer == batteryAccount) revert ReservedAccount(prosumer);
        Member storage m = _members[prosumer];
        if (m.standing == Standing.Prosumer) revert AlreadyProsumer(prosumer);
        if (!capacity.isRegistered(meterDeviceId)) revert UnknownDevice(meterDeviceId);
        address holder = memberOfDevice[meterDeviceId];
        if (holder != address(0) && holder != prosumer) revert DeviceTaken(meterDeviceId, holder);
        uint32 previous = m.meterDeviceId;
        if (m.standing == Standing.Former && previous != meterDeviceId && memberOfDevice[previous] == prosumer) {
            delete memberOfDevice[previous];
        }
        m.standing = Standing.Prosumer;
        m.meterDeviceId = meterDeviceId;
        memberOfDevice[meterDeviceId] = prosumer;
        emit ProsumerRegistered(prosumer, meterDeviceId);
    }

    /// @notice Remove a member; its balance and meter device stay (deviations of intervals it
    /// traded in still settle), its battery share is released.
    /// @param prosumer a registered prosumer
    function removeProsumer(address prosumer) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        Member storage m = _members[prosumer];
        if (m.standing != Standing.Prosumer) revert NotProsumer(prosumer);
        m.standing = Standing.Former;
        uint16 share = m.shareBps;
        if (share != 0) {
            m.shareBps = 0;
            totalShareBps -= share;
            emit BatteryShareSet(prosumer, 0, totalShareBps);
        }
        emit ProsumerRemoved(prosumer);
    }

    /// @notice Set a member's share of the community battery; all shares sum to <= 10000 bps.
    /// @param member a registered prosumer
    /// @param shareBps basis points
    function setBatteryShare(address member, uint16 shareBps) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        Member storage m = _members[member];
        if (m.standing != Standing.Prosumer) revert NotProsumer(member);
        uint256 total = uint256(totalShareBps) - m.shareBps + shareBps;
        if (total > BPS) revert SharesExceeded(total);
        m.shareBps = shareBps;
        totalShareBps = uint16(total);
        emit BatteryShareSet(member, shareBps, uint16(total));
    }

    /// @notice Set the grid tariffs (each inside the deployment's price bounds).
    /// @param newTariffs micro-euro per kWh
    function setTariffs(Tariffs calldata newTariffs) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setTariffs(newTariffs, minPriceMicroEurPerKwh, maxPriceMicroEurPerKwh);
    }

    /// @notice Stop orders, commitments and settlements (reads and the registry go on).
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Resume orders, commitments and settlements.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ orders

    /// @notice Place an order relayed by anyone, authorised by the prosumer's EIP-712 signature.
    /// @param order the order
    /// @param signature 65-byte (r, s, v) ECDSA signature of `hashOrder(order)`
    /// @return digest the order's EIP-712 digest
    function submitOrderSigned(Order calldata order, bytes calldata signature)
        external
        whenNotPaused
        returns (bytes32 digest)
    {
        digest = hashOrder(order);
        bytes memory refusal = _signedOrderRefusal(order, digest, signature);
        if (refusal.length != 0) _revertWith(refusal);
        _book(order, digest);
    }

    /// @notice Place a batch of signed orders relayed by anyone, in order. An order the contract
    /// refuses is skipped with OrderRejected (the reason `submitOrderSigned` would revert with)
    /// and never blocks the others; a prosumer's later order in the batch then sees its nonce.
    /// @param orders the orders (1..MAX_ORDERS_PER_BATCH)
    /// @param signatures one 65-byte (r, s, v) signature per order
    /// @return placed how many orders were placed
    function submitOrdersSigned(Order[] calldata orders, bytes[] calldata signatures)
        external
        whenNotPaused
        returns (uint256 placed)
    {
        uint256 n = orders.length;
        if (n == 0 || n > MAX_ORDERS_PER_BATCH || signatures.length != n) {
            revert BadBatch(n, signatures.length);
        }
        for (uint256 i = 0; i < n; ++i) {
            Order calldata order = orders[i];
            bytes32 digest = hashOrder(order);
            bytes memory refusal = _signedOrderRefusal(order, digest, signatures[i]);
            if (refusal.length == 0) {
                _book(order, digest);
                ++placed;
            } else {
                emit OrderRejected(order.prosumer, digest, order.nonce, refusal);
            }
        }
    }

    /// @notice Place an order sent by the prosumer itself (msg.sender == order.prosumer).
    /// @param order the order
    /// @return digest the order's EIP-712 digest
    function submitOrder(Order calldata order) external whenNotPaused returns (bytes32 digest) {
        if (msg.sender != order.prosumer) revert NotOrderOwner(msg.sender, order.prosumer);
        digest = hashOrder(order);
        bytes memory refusal = _orderRefusal(order);
        if (refusal.length != 0) _revertWith(refusal);
        _book(order, digest);
    }

    /// @notice The EIP-712 digest of an order (the 32 bytes that are signed).
    /// @param order the order
    /// @return the digest
    function hashOrder(Order calldata order) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ORDER_TYPEHASH,
                    order.prosumer,
                    order.interval,
                    order.side,
                    order.energyWh,
                    order.priceMicroEurPerKwh,
                    order.nonce,
                    order.deadline
                )
            )
        );
    }

    /// @notice The EIP-712 domain separator (name gridshare-market, version 1).
    /// @return the separator
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------ commitment and settlement

    /// @notice Close an interval to new orders (its book is what `bookHash` chains so far).
    /// @param interval an interval at most maxIntervalsAhead after the current one
    function commitOrders(uint64 interval) external onlyRole(SETTLER_ROLE) whenNotPaused {
        _checkNotTooFar(interval);
        IntervalState storage st = _intervals[interval];
        if (st.settled || st.deviationsSettled) revert AlreadySettled(interval);
        if (st.committed) revert AlreadyCommitted(interval);
        st.committed = true;
        emit OrdersCommitted(interval, st.bookHash);
    }

    /// @notice Settle an interval's trades: check them against the placed orders and book them.
    /// @dev Checks: not settled before (trades or deviations); interval at most maxIntervalsAhead
    /// ahead; `book` (all placed orders of the interval, placement order) hashes to `bookHash`;
    /// clearing price inside the bounds; `batteryPowerW` inside the battery's band; per trade:
    /// energy > 0, each party an order of the right side (buyOrder a buy, sellOrder a sell) whose
    /// prosumer is a member, or GRID_REF / BATTERY_REF, buyer != seller; the price is the retail
    /// tariff when the grid sells, the feed-in tariff when it buys, the clearing price otherwise,
    /// and within each order's limit (a buy's limit >= price, a sell's <= price); each order's
    /// fills sum to at most its energy; the battery's net sold energy equals
    /// -batteryPowerW * intervalSeconds / 3600 Wh within 1 Wh.
    /// @param interval the interval id
    /// @param clearingPriceMicroEurPerKwh the uniform clearing price
    /// @param batteryPowerW community battery power in W (charging positive)
    /// @param book the interval's placed orders in placement order
    /// @param trades the trades (emitted, not stored)
    function settle(
        uint64 interval,
        uint64 clearingPriceMicroEurPerKwh,
        int64 batteryPowerW,
        BookOrder[] calldata book,
        Trade[] calldata trades
    ) external onlyRole(SETTLER_ROLE) whenNotPaused {
        IntervalState storage st = _checkSettleable(interval, book);
        _checkPriceAndBattery(interval, clearingPriceMicroEurPerKwh, batteryPowerW);
        (uint256[] memory filled, int256 batteryBoughtWh) =
            _bookTrades(interval, clearingPriceMicroEurPerKwh, book, trades);
        // net sold + power * seconds / 3600 == 0 within 1 Wh, in exact integers (Wh * 3600 = W * s)
        int256 mismatch = -batteryBoughtWh * 3600 + int256(batteryPowerW) * int256(uint256(intervalSeconds));
        if (mismatch > 3600 || mismatch < -3600) {
            revert EnergyImbalance(-batteryBoughtWh, batteryPowerW, intervalSeconds);
        }
        bytes32 fillsHash = keccak256(abi.encodePacked(filled));
        st.fillsHash = fillsHash;
        st.committed = true;
        st.settled = true;
        st.clearingPriceMicroEurPerKwh = clearingPriceMicroEurPerKwh;
        st.batteryPowerW = batteryPowerW;
        st.batteryBoughtWh = batteryBoughtWh.toInt64();
        st.tradeCount = uint32(trades.length);
        emit IntervalSettled(
            interval, st.bookHash, fillsHash, clearingPriceMicroEurPerKwh, batteryPowerW, uint32(trades.length)
        );
    }

    /// @notice Settle the deviations of an interval that has ended: per account with a meter
    /// total, metered minus traded energy is bought from the grid at the imbalance-buy tariff
    /// (positive) or sold to it at the imbalance-sell tariff (negative). Anyone may call it:
    /// every input is checked against on-chain commitments.
    /// @dev Traded energy per account: the signed fills of its orders (buy positive) plus, for
    /// the battery, its bought energy of the settlement; an account that traded needs a total for
    /// its own meter device (`NoMeterTotal`). An interval whose trades were not settled settles
    /// with traded = 0 (book and fills empty) and takes no trade settlement afterwards. Former
    /// members are settled only where they traded.
    /// @param interval an interval before the current one
    /// @param book the settlement's book (empty if the trades were not settled)
    /// @param fills Wh filled per book order, as the settlement booked them (`IntervalSettled`'s
    /// fillsHash is keccak256 of them as 32-byte words)
    /// @param totals the oracle's meter totals of the interval (GridCapacity.writeMeterTotals)
    function settleDeviations(
        uint64 interval,
        BookOrder[] calldata book,
        uint64[] calldata fills,
        bytes calldata totals
    ) external whenNotPaused {
        uint64 current = currentInterval();
        if (interval >= current) revert IntervalNotOver(interval, current);
        IntervalState storage st = _intervals[interval];
        if (st.deviationsSettled) revert DeviationsAlreadySettled(interval);
        bytes32 totalsHash = capacity.meterTotalsHash(interval);
        if (totalsHash == 0) revert NoMeterTotals(interval);
        if (keccak256(totals) != totalsHash) revert TotalsMismatch(totalsHash, keccak256(totals));
        _checkBookAndFills(st, book, fills);
        (int256[] memory traded, bool[] memory touched) = _tradedPerTotal(st, book, fills, totals);
        uint32 accounts = _bookDeviations(interval, totals, traded, touched);
        st.deviationsSettled = true;
        emit DeviationsSettled(interval, totalsHash, accounts);
    }

    // ------------------------------------------------------------------ views

    /// @notice The stored state of an interval.
    /// @param interval the interval id
    /// @return the interval's book hash, fills hash and settlement summary
    function intervalState(uint64 interval) external view returns (IntervalState memory) {
        return _intervals[interval];
    }

    /// @notice Whether an interval still takes orders (neither committed nor settled).
    /// @param interval the interval id
    /// @return true if open
    function isOpen(uint64 interval) public view returns (bool) {
        IntervalState storage st = _intervals[interval];
        return !st.committed && !st.settled && !st.deviationsSettled;
    }

    /// @notice An account's market state (standing, share, meter device, nonce, balance).
    /// @param account any address
    /// @return the packed member record
    function memberOf(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @notice Whether an account is a registered prosumer.
    /// @param account any address
    /// @return true if registered and not removed
    function isProsumer(address account) external view returns (bool) {
        return _members[account].standing == Standing.Prosumer;
    }

    /// @notice The next order nonce a prosumer must use.
    /// @param account any address
    /// @return the nonce
    function nonceOf(address account) external view returns (uint64) {
        return _members[account].nonce;
    }

    /// @notice A member's battery share in basis points.
    /// @param account any address
    /// @return the share
    function shareBpsOf(address account) external view returns (uint16) {
        return _members[account].shareBps;
    }

    /// @notice Balance in nano-euro (positive = the community owes the account).
    /// @param account any address
    /// @return the balance
    function balanceOf(address account) external view returns (int256) {
        return _members[account].balanceNanoEur;
    }

    /// @notice The grid tariffs (micro-euro per kWh).
    /// @return the tariffs
    function tariffs() external view returns (Tariffs memory) {
        return _tariffs;
    }

    /// @notice Grid -> member price, micro-euro per kWh.
    /// @return the retail tariff
    function retailTariffMicroEurPerKwh() external view returns (uint64) {
        return _tariffs.retail;
    }

    /// @notice Member -> grid price, micro-euro per kWh.
    /// @return the feed-in tariff
    function feedInTariffMicroEurPerKwh() external view returns (uint64) {
        return _tariffs.feedIn;
    }

    /// @notice The interval containing the current block's timestamp.
    /// @return block.timestamp / intervalSeconds
    function currentInterval() public view returns (uint64) {
        return uint64(block.timestamp / intervalSeconds);
    }

    // ------------------------------------------------------------------ internals: roles, orders

    /// Separation of duties: the settler holds no other role here and not the capacity oracle's.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        if (role == SETTLER_ROLE) {
            _checkConflict(account, DEFAULT_ADMIN_ROLE);
            _checkConflict(account, COMMUNITY_ADMIN_ROLE);
            _checkConflict(account, PAUSER_ROLE);
            if (capacity.hasRole(CAPACITY_ORACLE_ROLE, account)) {
                revert RoleConflict(account, CAPACITY_ORACLE_ROLE, SETTLER_ROLE);
            }
        } else if (hasRole(SETTLER_ROLE, account)) {
            revert RoleConflict(account, SETTLER_ROLE, role);
        }
        return super._grantRole(role, account);
    }

    function _checkConflict(address account, bytes32 held) private view {
        if (hasRole(held, account)) revert RoleConflict(account, held, SETTLER_ROLE);
    }

    /// Why a signed order cannot be placed now (an ABI-encoded custom error), or empty bytes.
    function _signedOrderRefusal(Order calldata order, bytes32 digest, bytes calldata signature)
        private
        view
        returns (bytes memory)
    {
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != order.prosumer) {
            return abi.encodeWithSelector(BadSignature.selector);
        }
        return _orderRefusal(order);
    }

    /// Why an order cannot be placed now (an ABI-encoded custom error), or empty bytes.
    function _orderRefusal(Order calldata order) private view returns (bytes memory) {
        address prosumer = order.prosumer;
        Member storage m = _members[prosumer];
        if (m.standing != Standing.Prosumer) return abi.encodeWithSelector(NotProsumer.selector, prosumer);
        if (order.nonce != m.nonce) {
            return abi.encodeWithSelector(BadNonce.selector, prosumer, m.nonce, order.nonce);
        }
        if (block.timestamp > order.deadline) {
            return abi.encodeWithSelector(Expired.selector, order.deadline, block.timestamp);
        }
        bytes memory content = _orderContentRefusal(order.side, order.energyWh, order.priceMicroEurPerKwh);
        if (content.length != 0) return content;
        uint64 interval = order.interval;
        uint64 current = currentInterval();
        if (interval < current) return abi.encodeWithSelector(IntervalInPast.selector, interval, current);
        uint64 lastAllowed = current + maxIntervalsAhead;
        if (interval > lastAllowed) {
            return abi.encodeWithSelector(IntervalTooFarAhead.selector, interval, lastAllowed);
        }
        IntervalState storage st = _intervals[interval];
        if (st.committed || st.settled || st.deviationsSettled) {
            return abi.encodeWithSelector(IntervalClosed.selector, interval);
        }
        return "";
    }

    /// Book an order that passed `_orderRefusal`: the nonce, the book's hash chain, the event.
    function _book(Order calldata order, bytes32 digest) private {
        address prosumer = order.prosumer;
        Member storage m = _members[prosumer];
        uint64 nonce = m.nonce;
        m.nonce = nonce + 1;
        IntervalState storage st = _intervals[order.interval];
        st.bookHash = _link(st.bookHash, prosumer, order.side, order.energyWh, order.priceMicroEurPerKwh);
        emit OrderPlaced(
            order.interval, prosumer, digest, order.side, order.energyWh, order.priceMicroEurPerKwh, nonce
        );
    }

    /// Revert with ABI-encoded error data as is (a custom error built by `_orderRefusal`).
    function _revertWith(bytes memory data) private pure {
        assembly ("memory-safe") {
            revert(add(data, 0x20), mload(data))
        }
    }

    function _orderContentRefusal(uint8 side, uint64 energyWh, uint64 price) private view returns (bytes memory) {
        if (side > SELL) return abi.encodeWithSelector(InvalidSide.selector, side);
        if (energyWh == 0) return abi.encodeWithSelector(ZeroEnergy.selector);
        if (energyWh > maxOrderEnergyWh) {
            return abi.encodeWithSelector(EnergyOutOfBounds.selector, energyWh, maxOrderEnergyWh);
        }
        if (price < minPriceMicroEurPerKwh || price > maxPriceMicroEurPerKwh) {
            return abi.encodeWithSelector(PriceOutOfBounds.selector, price, minPriceMicroEurPerKwh, maxPriceMicroEurPerKwh);
        }
        return "";
    }

    function _checkNotTooFar(uint64 interval) private view {
        uint64 lastAllowed = currentInterval() + maxIntervalsAhead;
        if (interval > lastAllowed) revert IntervalTooFarAhead(interval, lastAllowed);
    }

    /// One link of the book's hash chain: keccak256(abi.encode(h, prosumer, side, energy, price)).
    function _link(bytes32 h, address prosumer, uint8 side, uint64 energyWh, uint64 price)
        private
        pure
        returns (bytes32 out)
    {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, h)
            mstore(add(ptr, 0x20), prosumer)
            mstore(add(ptr, 0x40), side)
            mstore(add(ptr, 0x60), energyWh)
            mstore(add(ptr, 0x80), price)
            out := keccak256(ptr, 0xa0)
        }
    }

    function _hashBook(BookOrder[] calldata book) private pure returns (bytes32 h) {
        for (uint256 i = 0; i < book.length; ++i) {
            BookOrder calldata o = book[i];
            h = _link(h, o.prosumer, o.side, o.energyWh, o.priceMicroEurPerKwh);
        }
    }

    // ------------------------------------------------------------------ internals: settlement

    function _checkSettleable(uint64 interval, BookOrder[] calldata book)
        private
        view
        returns (IntervalState storage st)
    {
        st = _intervals[interval];
        if (st.settled) revert AlreadySettled(interval);
        if (st.deviationsSettled) revert DeviationsAlreadySettled(interval);
        _checkNotTooFar(interval);
        bytes32 given = _hashBook(book);
        if (given != st.bookHash) revert BookMismatch(st.bookHash, given);
    }

    function _checkPriceAndBattery(uint64 interval, uint64 clearingPrice, int64 batteryPowerW) private view {
        if (clearingPrice < minPriceMicroEurPerKwh || clearingPrice > maxPriceMicroEurPerKwh) {
            revert PriceOutOfBounds(clearingPrice, minPriceMicroEurPerKwh, maxPriceMicroEurPerKwh);
        }
        (int64 pMinW, int64 pMaxW,) = capacity.bandOf(batteryDeviceId, interval);
        if (batteryPowerW < pMinW || batteryPowerW > pMaxW) {
            revert BatteryOutsideBand(batteryPowerW, pMinW, pMaxW);
        }
    }

    /// What booking a settlement's trades needs and accumulates (prices micro-euro per kWh,
    /// money nano-euro, energy Wh).
    struct Booking {
        uint64 interval;
        uint64 clearingPrice;
        uint64 retail;
        uint64 feedIn;
        int256 gridNet;
        int256 batteryBoughtWh;
    }

    /// Book every trade; returns the Wh filled per book order and the battery's bought Wh
    /// (sold negative).
    function _bookTrades(uint64 interval, uint64 clearingPrice, BookOrder[] calldata book, Trade[] calldata trades)
        private
        returns (uint256[] memory filled, int256 batteryBoughtWh)
    {
        filled = new uint256[](book.length);
        Booking memory b = Booking(interval, clearingPrice, _tariffs.retail, _tariffs.feedIn, 0, 0);
        for (uint256 i = 0; i < trades.length; ++i) {
            _bookTrade(b, i, trades[i], book, filled);
        }
        if (b.gridNet != 0) gridExchangeNanoEur += b.gridNet;
        batteryBoughtWh = b.batteryBoughtWh;
    }

    /// Check trade i against its orders (fills updated), book it and emit it.
    function _bookTrade(
        Booking memory b,
        uint256 i,
        Trade calldata trade,
        BookOrder[] calldata book,
        uint256[] memory filled
    ) private {
        uint64 energyWh = trade.energyWh;
        if (energyWh == 0) revert ZeroEnergy();
        uint32 buyRef = trade.buyOrder;
        uint32 sellRef = trade.sellOrder;
        uint64 price = sellRef == GRID_REF ? b.retail : (buyRef == GRID_REF ? b.feedIn : b.clearingPrice);
        address buyer = _party(i, buyRef, BUY, price, energyWh, book, filled);
        address seller = _party(i, sellRef, SELL, price, energyWh, book, filled);
        if (buyer == seller) revert SelfTrade(i);
        int256 amount = int256(uint256(energyWh) * price);
        if (buyer == address(0)) b.gridNet += amount;
        else _book(buyer, -amount);
        if (seller == address(0)) b.gridNet -= amount;
        else _book(seller, amount);
        if (buyRef == BATTERY_REF) b.batteryBoughtWh += int256(uint256(energyWh));
        if (sellRef == BATTERY_REF) b.batteryBoughtWh -= int256(uint256(energyWh));
        emit TradeSettled(b.interval, buyer, seller, buyRef, sellRef, energyWh, price);
    }

    /// The account behind a trade party reference; an order must be on `side`, accept `price`
    /// and have `energyWh` left.
    function _party(
        uint256 i,
        uint32 ref,
        uint8 side,
        uint64 price,
        uint64 energyWh,
        BookOrder[] calldata book,
        uint256[] memory filled
    ) private view returns (address) {
        if (ref == GRID_REF) return address(0);
        if (ref == BATTERY_REF) return batteryAccount;
        if (ref >= book.length) revert UnknownOrder(i, ref);
        BookOrder calldata o = book[ref];
        if (o.side != side) revert WrongSide(ref);
        uint64 limit = o.priceMicroEurPerKwh;
        if (side == BUY ? limit < price : limit > price) revert LimitViolated(ref, limit, price);
        uint256 total = filled[ref] + energyWh;
        if (total > o.energyWh) revert Overfilled(ref, total, o.energyWh);
        filled[ref] = total;
        return o.prosumer;
    }

    /// Add `amount` nano-euro to a member's or the battery's balance.
    function _book(address account, int256 amount) private {
        Member storage m = _members[account];
        Standing s = m.standing;
        if (s != Standing.Prosumer && s != Standing.Battery) revert UnknownParty(account);
        m.balanceNanoEur += amount.toInt128();
    }

    // ------------------------------------------------------------------ internals: deviations

    function _checkBookAndFills(IntervalState storage st, BookOrder[] calldata book, uint64[] calldata fills)
        private
        view
    {
        bytes32 givenBook = _hashBook(book);
        bytes32 givenFills = keccak256(abi.encodePacked(fills));
        if (!st.settled) {
            if (book.length != 0) revert BookMismatch(bytes32(0), givenBook);
            if (fills.length != 0) revert FillsMismatch(bytes32(0), givenFills);
            return;
        }
        if (givenBook != st.bookHash) revert BookMismatch(st.bookHash, givenBook);
        if (fills.length != book.length || givenFills != st.fillsHash) revert FillsMismatch(st.fillsHash, givenFills);
    }

    /// Traded Wh (bought positive) per meter-total record, and which records traded at all.
    function _tradedPerTotal(
        IntervalState storage st,
        BookOrder[] calldata book,
        uint64[] calldata fills,
        bytes calldata totals
    ) private view returns (int256[] memory traded, bool[] memory touched) {
        uint256 n = totals.length / 12;
        traded = new int256[](n);
        touched = new bool[](n);
        for (uint256 i = 0; i < fills.length; ++i) {
            if (fills[i] == 0) continue;
            uint256 k = _totalOf(book[i].prosumer, totals);
            int256 f = int256(uint256(fills[i]));
            traded[k] += book[i].side == BUY ? f : -f;
            touched[k] = true;
        }
        int256 battery = st.batteryBoughtWh;
        if (battery != 0) {
            uint256 k = _totalOf(batteryAccount, totals);
            traded[k] += battery;
            touched[k] = true;
        }
    }

    /// The index of the record of `account`'s meter device in `totals` (binary search; device
    /// ids ascend), reverting NoMeterTotal when missing or no longer the account's device.
    function _totalOf(address account, bytes calldata totals) private view returns (uint256) {
        uint32 deviceId = _members[account].meterDeviceId;
        uint256 lo = 0;
        uint256 hi = totals.length / 12;
        while (lo < hi) {
            uint256 mid = (lo + hi) >> 1;
            (uint32 id,) = _record(totals, mid);
            if (id < deviceId) lo = mid + 1;
            else hi = mid;
        }
        if (lo == totals.length / 12 || memberOfDevice[deviceId] != account) revert NoMeterTotal(account, deviceId);
        (uint32 found,) = _record(totals, lo);
        if (found != deviceId) revert NoMeterTotal(account, deviceId);
        return lo;
    }

    /// Record k of the totals: (uint32 deviceId, int64 energyWh), big-endian, 12 bytes.
    function _record(bytes calldata totals, uint256 k) private pure returns (uint32 deviceId, int64 energyWh) {
        uint256 word;
        assembly ("memory-safe") {
            word := calldataload(add(totals.offset, mul(k, 12)))
        }
        deviceId = uint32(word >> 224);
        energyWh = int64(uint64(word >> 160));
    }

    /// Book metered minus traded energy of every account with a total; returns how many.
    function _bookDeviations(uint64 interval, bytes calldata totals, int256[] memory traded, bool[] memory touched)
        private
        returns (uint32 accounts)
    {
        Tariffs memory t = _tariffs;
        int256 gridNet = 0;
        for (uint256 k = 0; k < traded.length; ++k) {
            (uint32 deviceId, int64 meteredWh) = _record(totals, k);
            address account = memberOfDevice[deviceId];
            if (account == address(0)) continue;
            if (_members[account].standing == Standing.Former && !touched[k]) continue;
            gridNet += _bookDeviation(interval, account, deviceId, meteredWh, traded[k], t);
            ++accounts;
        }
        if (gridNet != 0) gridExchangeNanoEur -= gridNet;
    }

    /// Book one account's deviation; returns what it paid the grid (nano-euro, received negative).
    function _bookDeviation(
        uint64 interval,
        address account,
        uint32 deviceId,
        int64 meteredWh,
        int256 tradedWh,
        Tariffs memory t
    ) private returns (int256 amount) {
        int256 deviation = int256(meteredWh) - tradedWh;
        uint64 price = deviation > 0 ? t.imbalanceBuy : t.imbalanceSell;
        amount = deviation * int256(uint256(price));
        _members[account].balanceNanoEur -= amount.toInt128();
        emit DeviationSettled(interval, account, deviceId, tradedWh.toInt64(), meteredWh, price);
    }

    function _setTariffs(Tariffs memory t, uint64 minPrice, uint64 maxPrice) private {
        if (
            !_within(t.retail, minPrice, maxPrice) || !_within(t.feedIn, minPrice, maxPrice)
                || !_within(t.imbalanceBuy, minPrice, maxPrice) || !_within(t.imbalanceSell, minPrice, maxPrice)
        ) revert InvalidPrices();
        _tariffs = t;
        emit TariffsSet(t.retail, t.feedIn, t.imbalanceBuy, t.imbalanceSell);
    }

    function _within(uint64 x, uint64 lo, uint64 hi) private pure returns (bool) {
        return lo <= x && x <= hi;
    }
}
